package intercept

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/flow"
	"teledock.dev/teledock/tunnel"
)

// podLoopback is where --to-pod connections go inside the pod: its sidecars listen on localhost.
var podLoopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// listener is one --to-pod port: TCP connections or UDP flows to ListenAddress:PORT in the daemon's
// network namespace are carried to 127.0.0.1:PORT in the intercepted pod, through the manager's
// Tunnel with the intercept's ID (the manager pairs them with the agent).
type listener struct {
	port   ToPod
	sock   io.Closer          // the listening socket
	cancel context.CancelFunc // ends the listener and every connection it accepted
	done   chan struct{}      // closed when the serve loop has returned
}

// close frees the port before it returns: the socket is closed here, not by a context callback
// running on another goroutine, since Close waits until the kernel has let go of the port.
func (l *listener) close() {
	l.cancel()
	_ = l.sock.Close()
	<-l.done
}

// openListeners returns the listeners for want: those old (the intercept being changed) already has
// are reused, the others opened. added are the new ones, which the caller closes if it gives up.
func (m *Intercepts) openListeners(name string, want []ToPod, old *record) (all, added map[ToPod]*listener, err error) {
	all, added = map[ToPod]*listener{}, map[ToPod]*listener{}
	for _, p := range want {
		if old != nil && old.listeners[p] != nil {
			all[p] = old.listeners[p]
			continue
		}
		l, err := m.listen(name, p)
		if err != nil {
			closeListeners(added, nil)
			return nil, nil, err
		}
		all[p], added[p] = l, l
	}
	return all, added, nil
}

// closeListeners closes the listeners of ls that keep does not hold.
func closeListeners(ls, keep map[ToPod]*listener) {
	for p, l := range ls {
		if keep[p] != l {
			l.close()
		}
	}
}

func (m *Intercepts) listen(name string, p ToPod) (*listener, error) {
	addr := netip.AddrPortFrom(m.cfg.ListenAddress, p.Port)
	var sock io.Closer
	var serve func(ctx context.Context)
	if p.UDP {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, fmt.Errorf("%w %s/UDP: %w", ErrToPodPortInUse, addr, err)
		}
		sock, serve = pc, func(ctx context.Context) { m.serveUDP(ctx, pc, name, p.Port) }
	} else {
		lis, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrToPodPortInUse, addr, err)
		}
		sock, serve = lis, func(ctx context.Context) { m.serveTCP(ctx, lis, name, p.Port) }
	}
	ctx, cancel := context.WithCancel(m.ctx)
	// Closing the socket is what ends the serve loop.
	context.AfterFunc(ctx, func() { _ = sock.Close() })
	l := &listener{port: p, sock: sock, cancel: cancel, done: make(chan struct{})}
	if !m.spawn(func() {
		defer close(l.done)
		serve(ctx)
	}) {
		cancel()
		return nil, ErrClosed
	}
	m.log.Debug("--to-pod listening", "intercept", name, "addr", addr, "udp", p.UDP)
	return l, nil
}

// spawn runs f on a goroutine that Close waits for, unless Close has begun.
func (m *Intercepts) spawn(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Go(f)
	return true
}

// dialPod opens a tunnel to 127.0.0.1:port in the intercepted pod.
func (m *Intercepts) dialPod(ctx context.Context, name, network string, port uint16) (*tunnel.Conn, error) {
	interceptID := m.interceptID(name)
	if interceptID == "" {
		return nil, fmt.Errorf("intercept %s is not active yet", name)
	}
	sessionID, _ := m.sess.Current()
	if sessionID == "" {
		return nil, ErrNotConnected
	}
	open := func(ctx context.Context) (tunnel.ClientStream, error) {
		s, err := m.sess.Manager().Tunnel(ctx)
		if err != nil {
			return nil, err // not `return m.sess.Manager().Tunnel(ctx)`: a typed nil would pass as a stream
		}
		return s, nil
	}
	dial := &managerv1.Dial{SessionId: sessionID, InterceptId: interceptID}
	return tunnel.DialStream(ctx, open, dial, network, netip.AddrPortFrom(podLoopback, port))
}

func (m *Intercepts) serveTCP(ctx context.Context, lis *net.TCPListener, name string, port uint16) {
	for {
		c, err := lis.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Running out of file descriptors, say; it may pass.
			m.log.Warn("--to-pod accept failed", "intercept", name, "port", port, "err", err)
			flow.Sleep(ctx, 100*time.Millisecond)
			continue
		}
		if !m.spawn(func() { m.forwardTCP(ctx, c, name, port) }) {
			_ = c.Close()
			return
		}
	}
}

// forwardTCP carries one --to-pod TCP connection. It ends when:
//   - the tunnel dial fails: the local client gets a RST;
//   - both sides finish sending: each EOF is passed on as a half-close;
//   - either side fails: both are closed, the local client with a RST;
//   - the listener closes (the intercept ends, the daemon quits): both are closed.
func (m *Intercepts) forwardTCP(ctx context.Context, local *net.TCPConn, name string, port uint16) {
	defer local.Close()
	dctx, cancel := context.WithTimeout(ctx, m.cfg.DialTimeout)
	remote, err := m.dialPod(dctx, name, "tcp", port)
	cancel()
	if err != nil {
		_ = local.SetLinger(0)
		m.log.Debug("--to-pod dial failed", "intercept", name, "port", port, "err", err)
		return
	}
	defer remote.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = local.Close()
		_ = remote.Close()
	})
	defer stop()
	err = pipe(local, remote)
	m.log.Debug("--to-pod connection ended", "intercept", name, "port", port, "err", err)
}

// pipe copies both ways with half-close and returns when both directions are done, with the errors
// tagged by direction.
func pipe(local *net.TCPConn, remote *tunnel.Conn) error {
	return flow.Join(flow.Side{Name: "local", End: local}, flow.Side{Name: "pod", End: remote}, func() {
		flow.Reset(local) // the local client must not take a failure for a clean end
		_ = remote.Close()
	})
}

// serveUDP reads datagrams and hands each to its source's flow in a flow table. The table keeps
// no idle timeout of its own: a flow lasts until the far end ends its stream (the agent's UDP
// idle timeout, or an error), a write fails either way, or the listener closes.
func (m *Intercepts) serveUDP(ctx context.Context, pc *net.UDPConn, name string, port uint16) {
	flows := flow.NewUDPTable(ctx, flow.UDPConfig[netip.AddrPort]{
		Dial: func(ctx context.Context, _ netip.AddrPort) (flow.Datagrams, error) {
			c, err := m.dialPod(ctx, name, ToPod{UDP: true}.network(), port)
			if err != nil {
				return nil, err // not `return m.dialPod(...)`: a typed nil would pass as a conn
			}
			return c, nil
		},
		DialTimeout: m.cfg.DialTimeout,
		Reply: func(src netip.AddrPort, b []byte) error {
			_, err := pc.WriteToUDPAddrPort(b, src)
			return err
		},
		Log: m.log.With("intercept", name, "port", port, "to_pod", "udp"),
	})
	defer flows.Close() // the listener's goroutine waits for its flows
	buf := make([]byte, 64<<10)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Debug("--to-pod UDP read failed", "intercept", name, "port", port, "err", err)
			continue
		}
		if !flows.Deliver(src, buf[:n]) {
			return
		}
	}
}

// DialVolumes opens a tunnel to the SFTP server with which the intercept's traffic-agent serves the
// intercepted container's mounts (the same paired path as --to-pod, on the agent's volumes port).
func (m *Intercepts) DialVolumes(ctx context.Context, name string) (net.Conn, error) {
	c, err := m.dialPod(ctx, name, "tcp", agentconfig.VolumesPort)
	if err != nil {
		return nil, err
	}
	return noDeadlines{c}, nil
}

// noDeadlines makes a tunnel a net.Conn for code that copies streams and never sets deadlines (the
// tunnel server does so for UDP only).
type noDeadlines struct{ *tunnel.Conn }

func (noDeadlines) SetDeadline(time.Time) error      { return errors.ErrUnsupported }
func (noDeadlines) SetReadDeadline(time.Time) error  { return errors.ErrUnsupported }
func (noDeadlines) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }
