package netstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
	"teledock.dev/teledock/internal/flow"
)

func (s *Stack) setUDPHandler() {
	fwd := udp.NewForwarder(s.ns, s.forwardUDP)
	s.ns.SetTransportProtocolHandler(udp.ProtocolNumber, fwd.HandlePacket)
}

// forwardUDP is called on the link's reader goroutine with the first datagram of a new
// (src, dst) pair, so it must not block. It registers an endpoint connected to that pair, which
// queues this and later datagrams of the flow, and dials on a new goroutine.
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
	id := r.ID()
	src, dst := addrPort(id.RemoteAddress, id.RemotePort), addrPort(id.LocalAddress, id.LocalPort)
	if !s.startFlow() {
		return false
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		s.wg.Done()
		s.debug("udp endpoint failed", "src", src, "dst", dst, "err", err)
		return true
	}
	go func() {
		defer s.wg.Done()
		err := s.runUDP(gonet.NewUDPConn(&wq, ep), src, dst)
		s.debug("udp flow ended", "src", src, "dst", dst, "err", err)
	}()
	return true
}

// Reasons a flow ended, for the debug log.
var (
	errIdle        = errors.New("idle timeout")
	errStackClosed = errors.New("stack closed")
)

// runUDP dials the tunnel, then copies datagrams both ways until the flow ends; it closes local.
func (s *Stack) runUDP(local *gonet.UDPConn, src, dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.dialTimeout)
	remote, err := s.dial(ctx, "udp", dst)
	cancel()
	if err != nil {
		s.udpDialFailures.Add(1)
		_ = local.Close()
		return fmt.Errorf("dial: %w", err)
	}
	s.udpFlows.Add(1)
	s.debug("udp flow started", "src", src, "dst", dst)

	// last is the time of the latest datagram in either direction, in Unix nanoseconds. The
	// copies only store it, so the per-datagram cost is one clock read; the idle timer below
	// checks it when it fires and re-arms for the remainder.
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { done <- copyDatagrams(remote, local, &last, "client -> tunnel") })
	wg.Go(func() { done <- copyDatagrams(local, remote, &last, "tunnel -> client") })

	idle := time.NewTimer(s.udpIdle)
	defer idle.Stop()
	var end error
	for end == nil {
		select {
		case end = <-done:
		case <-s.ctx.Done():
			end = errStackClosed
		case <-idle.C:
			if rest := s.udpIdle - time.Since(time.Unix(0, last.Load())); rest > 0 {
				idle.Reset(rest)
				continue
			}
			end = errIdle
		}
	}
	// Closing both unblocks whichever copy is still running.
	_ = local.Close()
	_ = remote.Close()
	wg.Wait()
	return end
}

// datagramConn is either end of a UDP flow: every Read and Write is one datagram.
type datagramConn interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
}

// copyDatagrams forwards datagrams from src to dst one at a time, recording activity in last. It
// returns when either side fails; io.EOF from src counts as a failure too, since a datagram flow
// has no half-close.
func copyDatagrams(dst, src datagramConn, last *atomic.Int64, dir string) error {
	// The copy buffer is larger than any UDP payload (65527 bytes over IPv6), so no datagram is
	// ever truncated.
	bp := flow.GetBuffer()
	defer flow.PutBuffer(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if err != nil {
			return fmt.Errorf("%s: read: %w", dir, err)
		}
		last.Store(time.Now().UnixNano())
		if _, err := dst.Write(buf[:n]); err != nil {
			return fmt.Errorf("%s: write: %w", dir, err)
		}
	}
}

var _ datagramConn = (*gonet.UDPConn)(nil)
