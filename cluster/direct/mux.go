package direct

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// RawServer serves a raw tunnel whose hello the guard admitted (Manager.ServeRaw).
type RawServer func(ctx context.Context, conn tunnel.RawEnd, d *managerv1.Dial) error

const (
	// handshakeTimeout bounds a connection's TLS handshake.
	handshakeTimeout = 10 * time.Second
	// helloTimeout bounds the wait for a raw tunnel's hello. Clients dial raw connections ahead of
	// their flows and keep them for less than this (session's rawSpareAge).
	helloTimeout = 60 * time.Second
)

// Mux serves the direct port: it completes each connection's TLS handshake and hands it on by
// ALPN, gRPC ("h2") to the listener GRPC returns, raw tunnels (tunnel.RawALPN) to a RawServer once
// the hello's token names a live session and its Dial that session.
type Mux struct {
	l     net.Listener
	tls   *tls.Config
	guard *Guard
	raw   RawServer
	log   *slog.Logger

	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

// NewMux returns a Mux for l with cfg's certificate; raw serves the raw tunnels.
func (g *Guard) NewMux(l net.Listener, cfg *tls.Config, raw RawServer, log *slog.Logger) *Mux {
	cfg = cfg.Clone()
	// Server preference decides: raw clients offer h2 too (to detect managers without raw tunnels).
	cfg.NextProtos = []string{tunnel.RawALPN, "h2"}
	return &Mux{l: l, tls: cfg, guard: g, raw: raw, log: log, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Serve accepts connections until the listener is closed (by Close, or by the gRPC server closing
// GRPC's listener). ctx is the lifetime of the raw tunnels it starts.
func (m *Mux) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := m.l.Accept()
		if err != nil {
			select {
			case <-m.done:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.handle(ctx, c)
		}()
	}
}

func (m *Mux) handle(ctx context.Context, c net.Conn) {
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	tc, err := tunnel.ServerTLS(hctx, c, m.tls)
	cancel()
	if err != nil {
		m.log.Debug("direct port: TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol != tunnel.RawALPN {
		select {
		case m.conns <- tc:
		case <-m.done:
			_ = tc.Close()
		}
		return
	}
	_ = tc.SetReadDeadline(time.Now().Add(helloTimeout))
	token, d, err := tunnel.ReadRawHello(tc)
	if err != nil {
		m.log.Debug("direct port: no raw hello", "remote", c.RemoteAddr().String(), "err", err)
		_ = tc.Close()
		return
	}
	_ = tc.SetReadDeadline(time.Time{})
	// Refusals end the connection without a result: the client then opens a Tunnel stream, whose
	// status says what the guard does not allow.
	if err := m.guard.admitRaw(token, d); err != nil {
		m.log.Debug("direct port: raw tunnel refused", "remote", c.RemoteAddr().String(), "err", err)
		_ = tc.Close()
		return
	}
	if err := m.raw(ctx, tunnel.NewRawConn(tc), d); err != nil {
		m.log.Debug("raw tunnel", "session", d.GetSessionId(), "dst", d.GetAddress(), "err", err)
	}
}

// Close stops accepting; connections already handed on are their servers'.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		err = m.l.Close()
	})
	return err
}

// GRPC is the listener of the direct port's gRPC connections, for grpc.Server.Serve. Closing it
// closes the Mux.
func (m *Mux) GRPC() net.Listener { return grpcListener{m} }

type grpcListener struct{ m *Mux }

func (l grpcListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.conns:
		return c, nil
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}

func (l grpcListener) Close() error   { return l.m.Close() }
func (l grpcListener) Addr() net.Addr { return l.m.l.Addr() }
