package netstack

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"teledock.dev/teledock/internal/flow"
)

// errStackClosed is why a TCP flow ended when Stack.Close aborted it, for the debug log.
var errStackClosed = errors.New("stack closed")

// TCP tuning. The leg between the kernel and this stack has a sub-millisecond RTT, so it is never
// window-limited by itself; what the buffers buy is slack between the local peer and the tunnel,
// whose throughput and latency vary (a port-forward stalls for milliseconds at a time). gVisor's
// defaults (1 MiB default, 4 MiB max) cap one flow well below what the tunnel can carry on a
// local cluster, so the ceiling is raised and receive-buffer moderation lets each flow grow
// towards it only when the reader keeps up; idle flows stay at the default.
const (
	tcpBufDefault = 1 << 20
	tcpBufMax     = 8 << 20
	// tcpMaxInFlight caps handshakes waiting on Dial. Past it the forwarder drops new SYNs and
	// the clients retransmit them, which is the back-pressure we want when the tunnel is slow.
	tcpMaxInFlight = 1024
)

// tuneTCP enables SACK (loss recovery without resending whole windows) and receive-buffer
// moderation, and widens the buffer ranges; see the constants above for why.
func tuneTCP(ns *stack.Stack) error {
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpBufDefault, Max: tcpBufMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpBufDefault, Max: tcpBufMax}
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &moderate, &rcv, &snd} {
		if err := ns.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("netstack: TCP option %T: %v", opt, err)
		}
	}
	return nil
}

func (s *Stack) setTCPHandler() {
	fwd := tcp.NewForwarder(s.ns, tcpBufDefault, tcpMaxInFlight, s.forwardTCP)
	s.ns.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
}

// forwardTCP handles one SYN on a goroutine of its own (the forwarder starts one per SYN). It
// dials before it completes the handshake, so a destination the tunnel cannot reach looks to the
// client like a refused connection instead of one that connects and then drops.
//
// A TCP flow ends in one of these ways:
//   - Dial fails or times out: the client gets a RST and no connection exists.
//   - The client goes away during the dial: the handshake fails and the tunnel conn is closed.
//   - Both sides finish sending: each EOF is passed on as a half-close (CloseWrite on the tunnel,
//     FIN to the client), and once both directions are done both sides are closed.
//   - Either side fails (RST from the client, a read or write error on the tunnel): the flow is
//     aborted at once, the client gets a RST and the tunnel conn is closed.
//   - Stack.Close: every flow is aborted as above.
func (s *Stack) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	src, dst := addrPort(id.RemoteAddress, id.RemotePort), addrPort(id.LocalAddress, id.LocalPort)
	if !s.startFlow() {
		r.Complete(true)
		return
	}
	defer s.wg.Done()

	ctx, cancel := context.WithTimeout(s.ctx, s.dialTimeout)
	remote, err := s.dial(ctx, "tcp", dst)
	cancel()
	if err != nil {
		s.tcpDialFailures.Add(1)
		s.debug("tcp dial failed", "src", src, "dst", dst, "err", err)
		r.Complete(true)
		return
	}
	if s.ctx.Err() != nil {
		// Close ran during the dial; an endpoint created now would outlive its abort.
		r.Complete(true)
		_ = remote.Close()
		return
	}

	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		s.debug("tcp handshake failed", "src", src, "dst", dst, "err", terr)
		r.Complete(true)
		_ = remote.Close()
		return
	}
	r.Complete(false)
	s.tcpFlows.Add(1)
	s.debug("tcp flow started", "src", src, "dst", dst)

	err = s.proxyTCP(ep, gonet.NewTCPConn(&wq, ep), remote)
	s.debug("tcp flow ended", "src", src, "dst", dst, "err", err)
}

// proxyTCP copies both ways with half-close and returns when both directions are done. It returns
// the first error that aborted the flow, tagged with its direction.
func (s *Stack) proxyTCP(ep tcpip.Endpoint, local *gonet.TCPConn, remote Conn) error {
	var once sync.Once
	// abort resets the client (Abort sends a RST on a connected endpoint, where Close could send
	// a FIN that reads as a clean end) and closes the tunnel conn, which unblocks both copies.
	abort := func() {
		once.Do(func() {
			ep.Abort()
			_ = remote.Close()
		})
	}
	stop := context.AfterFunc(s.ctx, abort)
	defer stop()

	err := flow.Join(flow.Side{Name: "client", End: local}, flow.Side{Name: "tunnel", End: remote}, abort)
	// Both directions ended; after an abort these are no-ops.
	once.Do(func() {
		_ = local.Close()
		_ = remote.Close()
	})
	if err != nil {
		return err
	}
	if s.ctx.Err() != nil {
		return errStackClosed
	}
	return nil
}
