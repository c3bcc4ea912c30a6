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
	"strings"
	"sync"

	"google.golang.org/grpc"

	"teledock.dev/teledock/agent/forward"
	"teledock.dev/teledock/agent/httproute"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/httpfilter"
	"teledock.dev/teledock/tunnel"
)

// Tunneler opens the stream of one intercepted connection; managerv1.ManagerClient is one.
type Tunneler interface {
	AgentTunnel(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[managerv1.TunnelMessage, managerv1.TunnelMessage], error)
}

// Router picks the destination of each flow: the developer, through an AgentTunnel, while the
// flow's target is intercepted, and the app otherwise. A target with HTTP-filtered intercepts or
// wiretaps is routed request by request (package httproute); one intercepted whole keeps the
// plain join, with no HTTP parsing. Set and Reset change the answer for new flows only; flows
// already joined keep their destination until they end.
type Router struct {
	log   *slog.Logger
	mgr   Tunneler
	app   forward.Destination
	podIP netip.Addr

	mu      sync.Mutex         // guards the following
	session string             // the agent session the routes belong to
	routes  map[routeKey]*port // intercepted targets only
	// counts are the request counters of filtered intercepts and wiretaps, by intercept id. They
	// outlive a Reset (the manager wants totals), and go when a Set no longer has the intercept.
	counts map[string]*counts
}

// routeKey names a target the way the manager does: its agent port and protocol.
type routeKey struct {
	port    uint16
	network string // "tcp" or "udp"
}

// port is what the manager said about one intercepted target: at most one intercept takes whole
// connections; the others are HTTP-filtered intercepts and wiretaps.
type port struct {
	whole      *route
	perRequest []*route // in the manager's order
	stats      *httproute.Stats
}

type route struct {
	interceptID string
	targetPort  int32
	wiretap     bool
	match       *httproute.Matcher // for per-request routes
	tap         *httproute.Tap     // for wiretaps
	session     string             // the session the tap dials in
	counts      *counts            // for per-request routes
}

// counts are one intercept's request counters: httproute counts the requests it answers
// (Route.Stats: Requests, Intercepted), and a wiretap's Tap its copies (TapConfig.Stats: Copied,
// Dropped), in the same Stats.
type counts struct {
	stats httproute.Stats
}

// Capabilities are what the Router can do that older agents could not, for the agent to declare
// on arrival (AgentInfo.capabilities): the manager sends a port several targets, HTTP-filtered
// intercepts and wiretaps, only to an agent that declared it routes them request by request.
func Capabilities() []managerv1.AgentCapability {
	return []managerv1.AgentCapability{managerv1.AgentCapability_AGENT_CAPABILITY_HTTP_FILTERS}
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
	return &Router{log: log, mgr: mgr, app: app, podIP: podIP.Unmap(), routes: make(map[routeKey]*port), counts: make(map[string]*counts)}, nil
}

// Route is the forward.Router.
func (r *Router) Route(f forward.Flow) forward.Destination {
	r.mu.Lock()
	p, ok := r.routes[routeKey{f.Target.AgentPort, f.Target.Network}]
	session := r.session
	r.mu.Unlock()
	switch {
	case !ok:
		return r.app
	case len(p.perRequest) > 0 && f.Target.Network == "tcp":
		return r.httpRoutes(session, p, f.Target)
	case p.whole != nil:
		return r.developer(session, p.whole)
	}
	return r.app // its only intercept could not be used
}

// developer is the destination of an intercepted flow: an AgentTunnel stream that the manager
// pairs with the developer's Accept. The session is the one the route came with, so that a flow
// routed just before a new session arrives is not sent in the name of the new one.
func (r *Router) developer(session string, rt *route) forward.Destination {
	return forward.Destination{
		Name: "intercept " + rt.interceptID,
		Dial: func(ctx context.Context, network string, t forward.Target) (forward.Conn, error) {
			return r.dialDeveloper(ctx, session, rt, network, t.AppPort)
		},
	}
}

func (r *Router) dialDeveloper(ctx context.Context, session string, rt *route, network string, appPort uint16) (forward.Conn, error) {
	// The manager names the target; a manager that left its port out gets the one the agent
	// knows, which is the same container port.
	targetPort := cmp.Or(rt.targetPort, int32(appPort))
	dial := &managerv1.Dial{SessionId: session, InterceptId: rt.interceptID, TargetPort: targetPort}
	// What the developer is told is the destination the peer meant: the app's port on the pod.
	dst := netip.AddrPortFrom(r.podIP, appPort)
	open := func(ctx context.Context) (tunnel.ClientStream, error) { return r.mgr.AgentTunnel(ctx) }
	c, err := tunnel.DialStream(ctx, open, dial, network, dst)
	if err != nil {
		return nil, fmt.Errorf("intercept %s: %w", rt.interceptID, err)
	}
	return c, nil
}

// httpRoutes is the destination of a connection to a target with per-request routes: httproute
// reads its requests and sends each to the intercept whose filter it matches, a copy to each
// wiretap that matches, and the rest (and connections that are not HTTP) to the app, or to the
// intercept of whole connections that shares the target with wiretaps.
func (r *Router) httpRoutes(session string, p *port, t forward.Target) forward.Destination {
	now := r.routing(session, p, t)
	key := routeKey{t.AgentPort, t.Network}
	cfg := httproute.Config{Log: r.log, Stats: p.stats, Live: func() httproute.Routing {
		// Each request is routed by the intercepts of its time: a connection that stays open
		// (keep-alive, a gRPC channel) follows them as they start and end.
		r.mu.Lock()
		p, ok := r.routes[key]
		session := r.session
		r.mu.Unlock()
		if !ok {
			return httproute.Routing{App: withTimeout(r.app.Dial, t), AppName: r.app.Name}
		}
		return r.routing(session, p, t).Routing
	}}
	return forward.Destination{
		Name: "HTTP routes of " + now.describe,
		Dial: now.fallback.Dial,
		Serve: func(ctx context.Context, client forward.Conn) error {
			return httproute.Serve(ctx, client, cfg)
		},
	}
}

// portRouting is a port's routes as httproute takes them, with what their destination says of
// them.
type portRouting struct {
	httproute.Routing
	fallback forward.Destination
	describe string
}

// routing is where the requests of port p go: each filtered intercept and wiretap, and the rest
// to the app, or to the intercept of whole connections that shares the port with wiretaps.
func (r *Router) routing(session string, p *port, t forward.Target) portRouting {
	fallback := r.app
	if p.whole != nil {
		fallback = r.developer(session, p.whole)
	}
	pr := portRouting{fallback: fallback}
	pr.App, pr.AppName = withTimeout(fallback.Dial, t), fallback.Name
	ids := make([]string, 0, len(p.perRequest))
	for _, rt := range p.perRequest {
		ids = append(ids, rt.interceptID)
		// httproute counts the route's requests one by one, however few connections to the
		// developer carry them.
		hr := httproute.Route{Name: rt.interceptID, Match: rt.match, Tap: rt.tap, Stats: &rt.counts.stats}
		if rt.tap == nil {
			hr.Dial = withTimeout(r.developer(session, rt).Dial, t)
		}
		pr.Routes = append(pr.Routes, hr)
	}
	pr.describe = strings.Join(ids, ",") + " (else " + fallback.Name + ")"
	return pr
}

// withTimeout binds a forward.Dialer to a TCP target as an httproute.Dialer that gives up after
// forward.DefaultDialTimeout, as the Forwarder's own dials do.
func withTimeout(d forward.Dialer, t forward.Target) httproute.Dialer {
	return func(ctx context.Context) (httproute.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, forward.DefaultDialTimeout)
		defer cancel()
		return d(ctx, "tcp", t)
	}
}

// Set replaces the routes with the manager's state of the agent's targets. Targets that are not
// intercepted, or that name no port, go to the app. A wiretap's Tap is kept while the wiretap
// and the session stay, and closed when either goes.
func (r *Router) Set(session string, targets []*managerv1.AgentTarget) {
	r.mu.Lock()
	old := r.routes
	routes := make(map[routeKey]*port)
	used := make(map[*httproute.Tap]bool)
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
		portOf := func() *port {
			p := routes[key]
			if p == nil {
				p = &port{stats: new(httproute.Stats)}
				if o := old[key]; o != nil {
					p.stats = o.stats
				}
				routes[key] = p
			}
			return p
		}
		rt := &route{interceptID: t.GetInterceptId(), targetPort: t.GetTargetPort(), wiretap: t.GetWiretap(), session: session}
		if !rt.wiretap && !httpfilter.Selects(t.GetHttpFilter()) {
			p := portOf()
			if p.whole != nil {
				r.log.Warn("ignoring a second intercept of whole connections", "agent_port", key.port, "intercept", rt.interceptID, "kept", p.whole.interceptID)
				continue
			}
			p.whole = rt
			continue
		}
		if key.network != "tcp" {
			r.log.Warn("ignoring an HTTP filter or wiretap of a UDP target", "agent_port", key.port, "intercept", rt.interceptID)
			continue
		}
		m, err := httpfilter.FromProto(t.GetHttpFilter()).Compile()
		if err != nil {
			// The manager checked it; one it could not have checked goes nowhere rather than
			// taking requests it did not ask for.
			r.log.Warn("ignoring an intercept whose HTTP filter does not compile", "intercept", rt.interceptID, "err", err)
			continue
		}
		rt.match = m
		rt.counts = r.counts[rt.interceptID]
		if rt.counts == nil {
			rt.counts = new(counts)
			r.counts[rt.interceptID] = rt.counts
		}
		if rt.wiretap {
			rt.tap = r.keepTap(old[key], rt, used)
		}
		p := portOf()
		p.perRequest = append(p.perRequest, rt)
	}
	for id := range r.counts {
		if !hasIntercept(routes, id) {
			delete(r.counts, id)
		}
	}
	r.swap(session, routes, used)
}

// keepTap is the Tap of the wiretap rt: the one it had on that port in the same session, or a
// new one. used collects the Taps kept.
func (r *Router) keepTap(old *port, rt *route, used map[*httproute.Tap]bool) *httproute.Tap {
	if old != nil {
		for _, o := range old.perRequest {
			if o.tap != nil && o.interceptID == rt.interceptID && o.session == rt.session && o.targetPort == rt.targetPort {
				used[o.tap] = true
				return o.tap
			}
		}
	}
	appPort := uint16(rt.targetPort)
	tap := httproute.NewTap(httproute.TapConfig{
		Log: r.log.With("wiretap", rt.interceptID),
		Dial: func(ctx context.Context) (httproute.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, forward.DefaultDialTimeout)
			defer cancel()
			return r.dialDeveloper(ctx, rt.session, rt, "tcp", appPort)
		},
		Stats: &rt.counts.stats,
	})
	used[tap] = true
	return tap
}

func hasIntercept(routes map[routeKey]*port, id string) bool {
	for _, p := range routes {
		for _, rt := range p.perRequest {
			if rt.interceptID == id {
				return true
			}
		}
	}
	return false
}

// Reset sends every new flow to the app: the manager's state is no longer known. Wiretaps stop.
func (r *Router) Reset() {
	r.mu.Lock()
	r.swap("", make(map[routeKey]*port), nil)
}

// swap installs routes (the caller holds r.mu, which swap releases) and closes the Taps of the
// old routes that are not in used.
func (r *Router) swap(session string, routes map[routeKey]*port, used map[*httproute.Tap]bool) {
	before := describe(r.routes)
	var stale []*httproute.Tap
	for _, p := range r.routes {
		for _, rt := range p.perRequest {
			if rt.tap != nil && !used[rt.tap] {
				stale = append(stale, rt.tap)
			}
		}
	}
	r.session, r.routes = session, routes
	after := describe(routes)
	r.mu.Unlock()
	for _, tap := range stale {
		tap.Close()
	}
	if !slices.Equal(before, after) {
		r.log.Info("intercepts changed", "session", session, "intercepted", after, "before", before)
	}
}

// Intercepted lists the intercepted targets as "PORT/NETWORK=INTERCEPT", sorted, for logs and
// tests; an HTTP-filtered intercept is "INTERCEPT(http)", a wiretap "INTERCEPT(wiretap)", and
// the intercepts of one target are joined with "+".
func (r *Router) Intercepted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return describe(r.routes)
}

// Counters are the totals of the filtered intercepts and wiretaps that the routes have now, by
// intercept id, and the session they belong to ("" when there is none).
func (r *Router) Counters() (string, []*managerv1.AgentInterceptCounters) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*managerv1.AgentInterceptCounters, 0, len(r.counts))
	for _, id := range slices.Sorted(maps.Keys(r.counts)) {
		c := r.counts[id]
		out = append(out, &managerv1.AgentInterceptCounters{InterceptId: id, Counters: &managerv1.InterceptCounters{
			Intercepted: c.stats.Intercepted.Load(),
			Copied:      c.stats.Copied.Load(),
			Dropped:     c.stats.Dropped.Load(),
		}})
	}
	return r.session, out
}

func describe(routes map[routeKey]*port) []string {
	out := make([]string, 0, len(routes))
	for _, k := range slices.SortedFunc(maps.Keys(routes), func(a, b routeKey) int {
		return cmp.Or(cmp.Compare(a.port, b.port), cmp.Compare(a.network, b.network))
	}) {
		p := routes[k]
		var ids []string
		if p.whole != nil {
			ids = append(ids, p.whole.interceptID)
		}
		for _, rt := range p.perRequest {
			kind := "(http)"
			if rt.wiretap {
				kind = "(wiretap)"
			}
			ids = append(ids, rt.interceptID+kind)
		}
		out = append(out, strconv.Itoa(int(k.port))+"/"+k.network+"="+strings.Join(ids, "+"))
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
