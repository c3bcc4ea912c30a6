// Package intercept sends the flows of intercepted targets to the developer through the
// traffic-manager, and accepts the developer's --to-pod connections to the pod's localhost.
package intercept

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/grpc"

	"teledock.dev/teledock/agent/forward"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// Tunneler opens the stream of one intercepted connection; managerv1.ManagerClient is one.
type Tunneler interface {
	AgentTunnel(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[managerv1.TunnelMessage, managerv1.TunnelMessage], error)
}

// Router picks the destination of each flow: the developer, through an AgentTunnel, while the
// flow's target is intercepted, and the app otherwise. Set and Reset change the answer for new
// flows only; flows already joined keep their destination until they end.
type Router struct {
	log   *slog.Logger
	mgr   Tunneler
	app   forward.Destination
	podIP netip.Addr

	mu      sync.Mutex          // guards the following
	session string              // the agent session the routes belong to
	routes  map[routeKey]*route // intercepted targets only
}

// routeKey names a target the way the manager does: its agent port and protocol.
type routeKey struct {
	port    uint16
	network string // "tcp" or "udp"
}

type route struct {
	interceptID string
	targetPort  int32
}

// NewRouter returns a router that sends everything to app until Set says otherwise. podIP is
// the pod's address, reported to the developer as the original destination of intercepted
// connections; when it is not valid, the unspecified address stands in.
func NewRouter(log *slog.Logger, mgr Tunneler, app forward.Destination, podIP netip.Addr) (*Router, error) {
	switch {
	case log == nil:
		return nil, errors.New("intercept: nil logger")
	case mgr == nil:
		return nil, errors.New("intercept: nil tunneler")
	case app.Dial == nil:
		return nil, errors.New("intercept: app destination has no dialer")
	}
	if !podIP.IsValid() {
		podIP = netip.IPv4Unspecified()
	}
	return &Router{log: log, mgr: mgr, app: app, podIP: podIP.Unmap(), routes: make(map[routeKey]*route)}, nil
}

// Route is the forward.Router.
func (r *Router) Route(f forward.Flow) forward.Destination {
	r.mu.Lock()
	rt, ok := r.routes[routeKey{f.Target.AgentPort, f.Target.Network}]
	session := r.session
	r.mu.Unlock()
	if !ok {
		return r.app
	}
	return r.developer(session, rt)
}

// developer is the destination of an intercepted flow: an AgentTunnel stream that the manager
// pairs with the developer's Accept. The session is the one the route came with, so that a flow
// routed just before a new session arrives is not sent in the name of the new one.
func (r *Router) developer(session string, rt *route) forward.Destination {
	return forward.Destination{
		Name: "intercept " + rt.interceptID,
		Dial: func(ctx context.Context, network string, t forward.Target) (forward.Conn, error) {
			// The manager names the target; a manager that left its port out gets the one the
			// agent knows, which is the same container port.
			targetPort := cmp.Or(rt.targetPort, int32(t.AppPort))
			dial := &managerv1.Dial{SessionId: session, InterceptId: rt.interceptID, TargetPort: targetPort}
			// What the developer is told is the destination the peer meant: the app's port on the pod.
			dst := netip.AddrPortFrom(r.podIP, t.AppPort)
			open := func(ctx context.Context) (tunnel.ClientStream, error) { return r.mgr.AgentTunnel(ctx) }
			c, err := tunnel.DialStream(ctx, open, dial, network, dst)
			if err != nil {
				return nil, fmt.Errorf("intercept %s: %w", rt.interceptID, err)
			}
			return c, nil
		},
	}
}

// Set replaces the routes with the manager's state of the agent's targets. Targets that are not
// intercepted, or that name no port, go to the app.
func (r *Router) Set(session string, targets []*managerv1.AgentTarget) {
	routes := make(map[routeKey]*route)
	for _, t := range targets {
		if t.GetInterceptId() == "" {
			continue
		}
		key, ok := keyOf(t)
		if !ok {
			r.log.Warn("ignoring an intercepted target the agent cannot serve", "agent_port", t.GetAgentPort(),
				"protocol", t.GetProtocol().String(), "intercept", t.GetInterceptId())
			continue
		}
		routes[key] = &route{interceptID: t.GetInterceptId(), targetPort: t.GetTargetPort()}
	}
	r.replace(session, routes)
}

// Reset sends every new flow to the app: the manager's state is no longer known.
func (r *Router) Reset() { r.replace("", make(map[routeKey]*route)) }

// Intercepted lists the intercepted targets as "PORT/NETWORK=INTERCEPT", sorted, for logs and
// tests.
func (r *Router) Intercepted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return describe(r.routes)
}

func (r *Router) replace(session string, routes map[routeKey]*route) {
	r.mu.Lock()
	before := describe(r.routes)
	r.session, r.routes = session, routes
	after := describe(routes)
	r.mu.Unlock()
	if !slices.Equal(before, after) {
		r.log.Info("intercepts changed", "session", session, "intercepted", after, "before", before)
	}
}

func describe(routes map[routeKey]*route) []string {
	out := make([]string, 0, len(routes))
	for _, k := range slices.SortedFunc(maps.Keys(routes), func(a, b routeKey) int {
		return cmp.Or(cmp.Compare(a.port, b.port), cmp.Compare(a.network, b.network))
	}) {
		out = append(out, strconv.Itoa(int(k.port))+"/"+k.network+"="+routes[k].interceptID)
	}
	return out
}

// keyOf is the route key of a target. A protocol left unspecified is TCP: proto3 cannot tell an
// unset enum from its zero value, and TCP is what a manager that forgot to say would mean.
func keyOf(t *managerv1.AgentTarget) (routeKey, bool) {
	port := t.GetAgentPort()
	if port <= 0 || port > 65535 {
		return routeKey{}, false
	}
	p := t.GetProtocol()
	if p == managerv1.Protocol_PROTOCOL_UNSPECIFIED {
		p = managerv1.Protocol_PROTOCOL_TCP
	}
	network := tunnel.NetworkOf(p)
	if network == "" {
		return routeKey{}, false
	}
	return routeKey{uint16(port), network}, true
}
