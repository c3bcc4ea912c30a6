package forward

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"teledock.dev/teledock/internal/flow"
)

// maxDatagram is a read buffer larger than any UDP payload.
const maxDatagram = 64 << 10

// newUDPTable returns the flow table of one UDP target: a flow per client address, dialed through
// the Router and ended after UDPIdleTimeout without a datagram either way. Replies leave from the
// agent port the client sent to.
func (f *Forwarder) newUDPTable(pc *net.UDPConn, t Target) *flow.UDPTable[netip.AddrPort] {
	log := f.log.With("target", t.Name)
	return flow.NewUDPTable(f.ctx, flow.UDPConfig[netip.AddrPort]{
		Dial: func(_ context.Context, src netip.AddrPort) (flow.Datagrams, error) {
			up, dst, err := f.dial(Flow{Target: t, Source: src}) // within DialTimeout of f.ctx
			if err != nil {
				log.Warn("udp flow refused", "src", src, "dst", dst.Name, "err", err)
				return nil, err
			}
			return up, nil
		},
		Idle: f.cfg.UDPIdleTimeout,
		Reply: func(src netip.AddrPort, b []byte) error {
			_, err := pc.WriteToUDPAddrPort(b, src)
			return err
		},
		Log: log,
	})
}

// serveUDP reads datagrams until the socket is closed and hands each to its client's flow. It
// closes the target's flow table, waiting for its flows, before it returns.
func (f *Forwarder) serveUDP(pc *net.UDPConn, t Target, flows *flow.UDPTable[netip.AddrPort]) {
	defer f.wg.Done()
	defer flows.Close()
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.ctx.Err() != nil {
				return
			}
			f.log.Debug("udp read", "target", t.Name, "err", err)
			if !flow.Sleep(f.ctx, 5*time.Millisecond) {
				return
			}
			continue
		}
		// A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; the flow is keyed by the plain address.
		if !flows.Deliver(netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), buf[:n]) {
			return
		}
	}
}
