package manager

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"teledock.dev/teledock/internal/flow"
	"teledock.dev/teledock/tunnel"
)

// framedHelloTimeout bounds the wait for a framed tunnel's hello. Clients open their streams ahead
// of their flows and keep them for less than this (the daemon's spareAge).
const framedHelloTimeout = 60 * time.Second

// ServeFramed serves framed tunnels (tunnel.FramedConn) on l, the clients' loopback port for raw
// tunnels through port-forwards, until l is closed; ctx is the tunnels' lifetime. A hello is
// admitted by its session, as a Tunnel stream on the clients' gRPC port beside it is: reaching
// either takes the right to port-forward into the manager's pod. Intercepted connections keep
// their streams (AgentTunnel and Accept), so a hello naming an intercept is refused.
func (m *Manager) ServeFramed(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		wg.Go(func() { m.serveFramed(ctx, c) })
	}
}

func (m *Manager) serveFramed(ctx context.Context, c net.Conn) {
	fc := tunnel.NewFramedConn(c, func() { flow.Reset(c) })
	_ = c.SetReadDeadline(time.Now().Add(framedHelloTimeout))
	_, d, err := tunnel.ReadRawHello(fc)
	_ = c.SetReadDeadline(time.Time{})
	if err == nil && d.GetInterceptId() != "" {
		err = errors.New("intercepted connections use their streams")
	}
	if err != nil {
		m.log.Debug("framed tunnel refused", "err", err)
		_ = fc.Close()
		return
	}
	if err := m.tunnels.ServeRaw(ctx, fc, d); err != nil {
		m.log.Debug("framed tunnel", "session", d.GetSessionId(), "dst", d.GetAddress(), "err", err)
	}
}
