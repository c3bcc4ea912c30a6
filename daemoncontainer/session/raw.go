package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"teledock.dev/teledock/tunnel"
)

// ErrNoRaw: no raw tunnel can carry this flow now; open a Tunnel stream instead.
var ErrNoRaw = errors.New("no raw tunnel")

// rawDialer opens raw tunnels (tunnel.RawALPN): one TLS connection to the direct port per TCP
// flow, with the session's token in its hello, dialled ahead (spares).
type rawDialer struct {
	tls     *tls.Config
	addrs   []string
	token   string
	session string
	log     *slog.Logger

	spares *spares[*tunnel.RawConn]
	last   atomic.Pointer[string] // the address that answered last
	// off: the manager does not serve raw tunnels (it answered with gRPC's ALPN only).
	off atomic.Bool
}

// newRawDialer returns a dialer that starts keeping spares (a session that uses the direct port
// opens flows soon); close stops it.
func newRawDialer(cfg *tls.Config, addrs []string, token, sessionID string, log *slog.Logger) *rawDialer {
	cfg = cfg.Clone()
	// Offering h2 too tells a manager that predates raw tunnels (it picks h2) from a broken one.
	cfg.NextProtos = []string{tunnel.RawALPN, "h2"}
	r := &rawDialer{tls: cfg, addrs: addrs, token: token, session: sessionID, log: log}
	r.spares = newSpares(r.dial, func(c *tunnel.RawConn) { c.Close() }, r.off.Load, log)
	r.spares.warm()
	return r
}

// dial makes one raw connection: TCP to the address that answered last (or the first of all
// that answers), then TLS.
func (r *rawDialer) dial(ctx context.Context) (*tunnel.RawConn, error) {
	raw, err := r.dialTCP(ctx)
	if err != nil {
		return nil, err
	}
	c, err := tunnel.ClientTLS(ctx, raw, r.tls)
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("TLS: %w", err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != tunnel.RawALPN {
		_ = c.Close()
		if !r.off.Swap(true) {
			r.log.Info("the traffic-manager predates raw tunnels; flows use gRPC streams on the direct port", "alpn", p)
		}
		return nil, ErrNoRaw
	}
	return tunnel.NewRawConn(c), nil
}

// dialTCP reuses the address that answered last: racing every node's address for each flow
// would make and drop a connection per node.
func (r *rawDialer) dialTCP(ctx context.Context) (net.Conn, error) {
	if addr := r.last.Load(); addr != nil {
		var d net.Dialer
		if c, err := d.DialContext(ctx, "tcp", *addr); err == nil {
			return c, nil
		}
	}
	c, err := dialFirst(ctx, r.addrs)
	if err != nil {
		return nil, err
	}
	addr := c.RemoteAddr().String()
	r.last.Store(&addr)
	return c, nil
}

// open starts a raw tunnel to dst. ErrNoRaw (wrapped): use a Tunnel stream; a *tunnel.DialError:
// the destination's answer.
func (r *rawDialer) open(ctx context.Context, dst netip.AddrPort) (tunnel.RawEnd, error) {
	if r.off.Load() {
		return nil, ErrNoRaw
	}
	return openRaw(ctx, r.spares, func(c *tunnel.RawConn) tunnel.RawEnd { return c }, r.token, r.session, dst,
		func(*tunnel.RawConn, error) {})
}

func (r *rawDialer) close() { r.spares.close() }

// DialRaw opens a TCP flow to dst as a raw tunnel: on the direct port when the session uses it,
// and otherwise as a framed tunnel on the port-forward. It fails with ErrNoRaw when neither can
// carry it now: the caller then uses a Tunnel stream (tunnel.Dial with Manager()), which takes
// the direct port or the port-forward as the session does.
func (s *Session) DialRaw(ctx context.Context, dst netip.AddrPort) (tunnel.RawEnd, error) {
	var c tunnel.RawEnd
	var err error
	switch d := s.directForFlow(); {
	case d != nil && d.raw != nil:
		c, err = d.raw.open(ctx, dst)
	case d == nil && s.framed != nil:
		c, err = s.framed.open(ctx, s.SessionID(), dst)
	default:
		return nil, ErrNoRaw
	}
	if errors.Is(err, ErrNoRaw) {
		s.log.Debug("raw tunnel unavailable; the flow uses a stream", "dst", dst.String(), "err", err)
	}
	return c, err
}
