package manager

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/proto"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/broker"
	"teledock.dev/teledock/tunnel"
)

// errQueueFull: a session does not take the connections offered to it.
var errQueueFull = errors.New("too many connections wait for this session to accept them")

// Tunnel carries one TCP connection or UDP flow for a live session; see tunnel.Server for how it
// ends. The session is checked when the Dial arrives, and the tunnel ends with the session. A Dial
// with an intercept_id is a --to-pod connection instead: it goes to an agent of the intercepted
// workload (see toPod).
func (m *Manager) Tunnel(stream managerv1.Manager_TunnelServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if d := first.GetDial(); d.GetInterceptId() != "" {
		return grpcError(m.toPod(stream, d))
	}
	return m.tunnels.Serve(&replayStream{Manager_TunnelServer: stream, first: first})
}

// replayStream hands the message Tunnel already read to tunnel.Server as the stream's first.
type replayStream struct {
	managerv1.Manager_TunnelServer
	first *managerv1.TunnelMessage
}

func (r *replayStream) Recv() (*managerv1.TunnelMessage, error) {
	if m := r.first; m != nil {
		r.first = nil
		return m, nil
	}
	return r.Manager_TunnelServer.Recv()
}

func (r *replayStream) RecvMsg(v any) error {
	if m := r.first; m != nil {
		r.first = nil
		dst, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("receive into %T: not a proto message", v)
		}
		proto.Reset(dst)
		proto.Merge(dst, m)
		return nil
	}
	return r.Manager_TunnelServer.RecvMsg(v)
}

// toPod pairs a client's --to-pod connection with an agent of the intercepted workload, which
// dials the address (127.0.0.1:PORT) in its pod. Only the intercept's owner may, and only to the
// ports of its --to-pod list; anything else, or no agent, is refused with a DialResult.
func (m *Manager) toPod(stream managerv1.Manager_TunnelServer, d *managerv1.Dial) error {
	s, err := m.clientSession(d.GetSessionId())
	if err != nil {
		return err
	}
	ic, ok := m.interceptByID(d.GetInterceptId())
	if !ok || ic.session != s {
		return tunnel.Refuse(stream, managerv1.DialError_DIAL_ERROR_UNREACHABLE, fmt.Sprintf("you have no intercept %s", d.GetInterceptId()))
	}
	if !ic.allowsToPod(d) {
		return tunnel.Refuse(stream, managerv1.DialError_DIAL_ERROR_BAD_REQUEST,
			fmt.Sprintf("%s %s is not a --to-pod port of intercept %s", d.GetProtocol(), d.GetAddress(), ic.name))
	}
	agents := m.agentsOf(ic.workload, "")
	if len(agents) == 0 {
		return tunnel.Refuse(stream, managerv1.DialError_DIAL_ERROR_UNREACHABLE, fmt.Sprintf("no traffic-agent of %s is connected", ic.workload))
	}
	a := agents[0]
	return m.broker.Initiate(stream, broker.Offer{Dial: d, Acceptor: a.id, Notify: offerTo(a), Life: s.ctx})
}

// AgentTunnel carries a connection an agent received for an intercepted target to the client that
// owns the intercept. A Dial for an intercept that is not ACTIVE on the agent's workload is
// refused with a DialResult (UNREACHABLE), and the agent may then send the connection to the app.
func (m *Manager) AgentTunnel(stream managerv1.Manager_AgentTunnelServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	d := first.GetDial()
	if d == nil {
		return grpcError(fmt.Errorf("%w: first message is %T, not a dial", errInvalid, first.GetMsg()))
	}
	s, err := m.agentSession(d.GetSessionId())
	if err != nil {
		return err
	}
	ic, ok := m.interceptByID(d.GetInterceptId())
	if !ok || ic.state != stateActive || ic.workload != s.agent.workload {
		return tunnel.Refuse(stream, managerv1.DialError_DIAL_ERROR_UNREACHABLE, fmt.Sprintf("intercept %s is not active", d.GetInterceptId()))
	}
	return grpcError(m.broker.Initiate(stream, broker.Offer{Dial: d, Acceptor: ic.session.id, Notify: offerTo(ic.session), Life: s.ctx}))
}

// Accept is the acceptor's side of a paired connection; see broker.Broker.Accept.
func (m *Manager) Accept(stream managerv1.Manager_AcceptServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	a := first.GetAccept()
	if a == nil {
		return grpcError(fmt.Errorf("%w: first message is %T, not an accept", errInvalid, first.GetMsg()))
	}
	s, err := m.session(a.GetSessionId())
	if err != nil {
		return err
	}
	return grpcError(m.broker.Accept(stream, s.id, a.GetConnId(), s.ctx))
}

// WatchDials streams to a client the connections it must accept. It ends with the session (its
// status is the session's end) or when the client cancels. IncomingDials that wait while no
// WatchDials runs are delivered when one starts, unless their connection gave up meanwhile.
func (m *Manager) WatchDials(req *managerv1.SessionRequest, stream managerv1.Manager_WatchDialsServer) error {
	s, err := m.clientSession(req.GetSessionId())
	if err != nil {
		return err
	}
	for {
		select {
		case d := <-s.dials:
			if !m.broker.Waiting(d.GetConnId()) {
				continue
			}
			if err := stream.Send(d); err != nil {
				requeue(s, d)
				return err
			}
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		case <-stream.Context().Done():
			return nil
		}
	}
}

// requeue gives back an IncomingDial that a dying watch took, for the session's next watch.
func requeue(s *session, d *managerv1.IncomingDial) {
	select {
	case s.dials <- d:
	default: // full: the initiator times out
	}
}

// offerTo queues IncomingDials for the session, without blocking.
func offerTo(s *session) func(*managerv1.IncomingDial) error {
	return func(d *managerv1.IncomingDial) error {
		if s.ctx.Err() != nil {
			return context.Cause(s.ctx)
		}
		select {
		case s.dials <- d:
			return nil
		default:
			return errQueueFull
		}
	}
}

// allowsToPod reports whether the Dial asks for a loopback address of the pod at one of the
// intercept's --to-pod ports.
func (ic *intercept) allowsToPod(d *managerv1.Dial) bool {
	ap, err := netip.ParseAddrPort(d.GetAddress())
	if err != nil || !ap.Addr().IsLoopback() {
		return false
	}
	// The agent's SFTP server, when it serves the intercepted container's mounts: the owner's
	// daemon reaches it for the intercept's volumes.
	if len(ic.mounts) > 0 && ap.Port() == agentconfig.VolumesPort && d.GetProtocol() == managerv1.Protocol_PROTOCOL_TCP {
		return true
	}
	for _, tp := range ic.toPod {
		proto := tp.GetProtocol()
		if proto == managerv1.Protocol_PROTOCOL_UNSPECIFIED {
			proto = managerv1.Protocol_PROTOCOL_TCP
		}
		if int(tp.GetPort()) == int(ap.Port()) && proto == d.GetProtocol() {
			return true
		}
	}
	return false
}
