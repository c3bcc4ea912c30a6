package netstack

import (
	"context"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
	"teledock.dev/teledock/internal/flow"
)

// udpPair names a UDP flow: gVisor tells flows apart by both ends, so one client socket sending to
// two cluster addresses is two flows.
type udpPair struct{ src, dst netip.AddrPort }

func (p udpPair) String() string { return p.src.String() + " -> " + p.dst.String() }

// newUDPTable returns the table that carries the stack's UDP flows through the tunnel.
func (s *Stack) newUDPTable(idle, dialTimeout time.Duration) *flow.UDPTable[udpPair] {
	return flow.NewUDPTable(s.ctx, flow.UDPConfig[udpPair]{
		Dial: func(ctx context.Context, p udpPair) (flow.Datagrams, error) {
			c, err := s.dial(ctx, "udp", p.dst)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		DialTimeout: dialTimeout,
		Idle:        idle,
		Log:         s.log,
	})
}

func (s *Stack) setUDPHandler() {
	fwd := udp.NewForwarder(s.ns, s.forwardUDP)
	s.ns.SetTransportProtocolHandler(udp.ProtocolNumber, fwd.HandlePacket)
}

// forwardUDP is called on the link's reader goroutine with the first datagram of a new
// (src, dst) pair, so it must not block. It registers an endpoint connected to that pair, which
// queues this and later datagrams of the flow, and hands it to the flow table, which dials.
//
// A UDP flow ends in one of these ways:
//   - Dial fails or times out: the endpoint is closed and queued datagrams are dropped.
//   - No datagram in either direction for Config.UDPIdleTimeout.
//   - The tunnel conn's Read fails or reports EOF (the far end ended the flow).
//   - Reading or writing the local endpoint fails, e.g. after the client's port became
//     unreachable.
//   - Stack.Close.
//
// In every case both the endpoint and the tunnel conn are closed; a later datagram for the same
// pair starts a new flow.
func (s *Stack) forwardUDP(r *udp.ForwarderRequest) bool {
	if s.ctx.Err() != nil {
		return false // closing
	}
	id := r.ID()
	p := udpPair{src: addrPort(id.RemoteAddress, id.RemotePort), dst: addrPort(id.LocalAddress, id.LocalPort)}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		s.debug("udp endpoint failed", "flow", p, "err", err)
		return true
	}
	local := gonet.NewUDPConn(&wq, ep)
	if !s.udp.Attach(p, local) {
		_ = local.Close() // Close began meanwhile
	}
	return true
}

var _ flow.Datagrams = (*gonet.UDPConn)(nil)
