package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// Transport says what carries the tunnels (the data plane). Control calls (arrive, heartbeats,
// intercepts, DNS) always go through the port-forward, which the API server authorizes.
type Transport string

const (
	// TransportAuto tries the manager's direct port after each arrival and uses it when it
	// answers; otherwise the tunnels stay on the port-forward.
	TransportAuto Transport = "auto"
	// TransportPortForward never tries the direct port.
	TransportPortForward Transport = "port-forward"
	// TransportDirect is TransportAuto for a user who wants the direct port: the CLI fails the
	// connect when it cannot be used. A direct connection that breaks later still falls back to the
	// port-forward for new flows, so the session survives.
	TransportDirect Transport = "direct"
)

// ParseTransport checks a --transport value; "" means auto.
func ParseTransport(s string) (Transport, error) {
	switch t := Transport(s); t {
	case "":
		return TransportAuto, nil
	case TransportAuto, TransportPortForward, TransportDirect:
		return t, nil
	}
	return "", fmt.Errorf("unknown transport %q: want auto, port-forward or direct", s)
}

// ErrDirectUnavailable wraps why the direct transport is not in use.
var ErrDirectUnavailable = errors.New("direct transport unavailable")

// errNotInstalled: the manager has no direct port. With TransportAuto that is the normal case and
// not worth a word in status.
var errNotInstalled = errors.New("not installed")

// directConn is one arrival's connection to the manager's direct port. Its token belongs to that
// arrival's session, so a new arrival replaces it.
type directConn struct {
	conn *grpc.ClientConn
	mgr  managerv1.ManagerClient
	// addrs are the addresses the manager offered; dialFirst races them.
	addrs []string
	// raw opens the TCP flows' raw tunnels; Tunnel streams carry the rest.
	raw *rawDialer
}

func (d *directConn) close() {
	d.raw.close()
	_ = d.conn.Close()
}

// tokenCreds sends the session's token with every call on the direct port.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity: the token must never cross the network in the clear.
func (tokenCreds) RequireTransportSecurity() bool { return true }

// openDirect asks the manager (over the port-forward) for its direct port, connects with the CA
// it names as the only trusted one, and proves the path, TLS and token with a health check before
// timeout ends.
func (s *Session) openDirect(ctx context.Context, sessionID string) (*directConn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DirectTimeout)
	defer cancel()
	info, err := s.mgr.DirectInfo(ctx, &managerv1.SessionRequest{SessionId: sessionID})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unimplemented:
		return nil, fmt.Errorf("%w: the traffic-manager predates it (teledock install upgrades it): %w", ErrDirectUnavailable, errNotInstalled)
	case codes.FailedPrecondition:
		return nil, fmt.Errorf("%w: %s: %w", ErrDirectUnavailable, status.Convert(err).Message(), errNotInstalled)
	default:
		return nil, fmt.Errorf("%w: ask the manager: %w", ErrDirectUnavailable, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(info.GetCaCert()) {
		return nil, fmt.Errorf("%w: the manager sent no usable CA certificate", ErrDirectUnavailable)
	}
	if len(info.GetAddresses()) == 0 || info.GetToken() == "" {
		return nil, fmt.Errorf("%w: the manager sent no address or token", ErrDirectUnavailable)
	}
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: info.GetServerName(), MinVersion: tls.VersionTLS13}
	addrs := info.GetAddresses()
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(tunnel.TLS(tlsCfg)),
		grpc.WithPerRPCCredentials(tokenCreds(info.GetToken())),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dialFirst(ctx, addrs) }),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: s.cfg.MaxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
		// Flows pick the direct port only while it is Ready; an idle channel would send every
		// flow after a quiet half hour to the port-forward.
		grpc.WithIdleTimeout(0),
	}
	// The same windows and buffers as the port-forward (tunnel.DialOptions, from the daemon).
	opts = append(opts, s.cfg.DialOptions...)
	// A quicker keepalive than the port-forward's (30s): new flows leave a silently dead direct
	// connection once a ping goes unanswered. 15s stays above the server's 10s ping minimum.
	opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 15 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))
	conn, err := grpc.NewClient("passthrough:///traffic-manager-direct", opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDirectUnavailable, err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%w: %v within %s: %w", ErrDirectUnavailable, addrs, s.cfg.DirectTimeout, err)
	}
	return &directConn{conn: conn, mgr: managerv1.NewManagerClient(conn), addrs: addrs,
		raw: newRawDialer(tlsCfg, addrs, info.GetToken(), sessionID, s.log.With("part", "raw"))}, nil
}

// dialFirst dials every address at once and keeps the first connection made; any node's
// NodePort leads to the manager, and some of them may be unreachable from here.
func dialFirst(ctx context.Context, addrs []string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		conn net.Conn
		err  error
	}
	results := make(chan result, len(addrs)) // buffered: losers never block
	var d net.Dialer
	for _, a := range addrs {
		go func() {
			c, err := d.DialContext(ctx, "tcp", a)
			results <- result{c, err}
		}()
	}
	var errs []error
	for i := range addrs {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		// Close the connections that lose the race, once they are made or fail.
		go func(left int) {
			for range left {
				if r := <-results; r.conn != nil {
					_ = r.conn.Close()
				}
			}
		}(len(addrs) - i - 1)
		return r.conn, nil
	}
	return nil, errors.Join(errs...)
}

// ready reports whether new flows may use the direct connection; it wakes an idle one.
func (d *directConn) ready() bool {
	switch d.conn.GetState() {
	case connectivity.Ready:
		return true
	case connectivity.Idle:
		d.conn.Connect()
	}
	return false
}

// routedClient is the manager client that Session.Manager returns: the data-plane streams
// (Tunnel, Accept) go over the direct connection while it is ready, everything else, and every
// stream when it is not, over the port-forward.
type routedClient struct {
	managerv1.ManagerClient // the port-forward
	s                       *Session
}

func (r routedClient) Tunnel(ctx context.Context, opts ...grpc.CallOption) (managerv1.Manager_TunnelClient, error) {
	return r.dataStream("tunnel", func(m managerv1.ManagerClient) (managerv1.Manager_TunnelClient, error) {
		return m.Tunnel(ctx, opts...)
	})
}

// Accept is routed as Tunnel is: before the manager's first answer (the agent's Dial) only the
// Accept was sent, and the manager pairs it once, so sending it again is safe.
func (r routedClient) Accept(ctx context.Context, opts ...grpc.CallOption) (managerv1.Manager_AcceptClient, error) {
	return r.dataStream("accept", func(m managerv1.ManagerClient) (managerv1.Manager_AcceptClient, error) {
		return m.Accept(ctx, opts...)
	})
}

// dataStream opens a data-plane stream (Tunnel and Accept are the same stream type) on the direct
// connection while it is ready, moving it to the port-forward if it fails before its first answer;
// otherwise, and when the direct open fails, on the port-forward.
func (r routedClient) dataStream(what string, open func(managerv1.ManagerClient) (managerv1.Manager_TunnelClient, error)) (managerv1.Manager_TunnelClient, error) {
	if d := r.s.directForFlow(); d != nil {
		st, err := open(d.mgr)
		if err == nil {
			return &fallbackStream{cur: st, reopen: func() (managerv1.Manager_TunnelClient, error) {
				r.s.log.Debug("direct stream failed before its answer; it uses the port-forward", "stream", what)
				return open(r.ManagerClient)
			}}, nil
		}
		r.s.log.Debug("direct stream failed; it uses the port-forward", "stream", what, "err", err)
	}
	return open(r.ManagerClient)
}

// fallbackStream is a Tunnel stream on the direct port that moves to the port-forward when the
// direct connection fails before the manager's first answer (gRPC can believe in a connection
// whose peer is gone until a keepalive fails). What was sent until then is sent again there: a
// client sends only its Dial before the DialResult, so the destination sees at most one more
// connection attempt. After the first answer it is the direct stream, unchanged.
//
// Only the dialing goroutine uses the stream until the first answer; Conn's reader and writer
// start after it, so cur needs no lock.
type fallbackStream struct {
	cur      managerv1.Manager_TunnelClient
	reopen   func() (managerv1.Manager_TunnelClient, error)
	sent     []any // messages sent before the first answer
	answered bool
}

var _ managerv1.Manager_TunnelClient = (*fallbackStream)(nil)

func (f *fallbackStream) Send(m *managerv1.TunnelMessage) error { return f.SendMsg(m) }

func (f *fallbackStream) SendMsg(m any) error {
	if f.answered {
		return f.cur.SendMsg(m)
	}
	f.sent = append(f.sent, m)
	// A failed send shows as the Recv's error, which decides whether to move.
	_ = f.cur.SendMsg(m)
	return nil
}

func (f *fallbackStream) Recv() (*managerv1.TunnelMessage, error) {
	m := new(managerv1.TunnelMessage)
	if err := f.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

func (f *fallbackStream) RecvMsg(m any) error {
	err := f.cur.RecvMsg(m)
	if f.answered || status.Code(err) != codes.Unavailable {
		f.answered = f.answered || err == nil
		return err
	}
	st, rerr := f.reopen()
	if rerr != nil {
		return rerr
	}
	f.cur = st
	for _, s := range f.sent {
		if err := st.SendMsg(s); err != nil {
			break // the Recv below has the stream's status
		}
	}
	f.sent = nil
	err = st.RecvMsg(m)
	f.answered = err == nil
	return err
}

func (f *fallbackStream) CloseSend() error             { return f.cur.CloseSend() }
func (f *fallbackStream) Header() (metadata.MD, error) { return f.cur.Header() }
func (f *fallbackStream) Trailer() metadata.MD         { return f.cur.Trailer() }
func (f *fallbackStream) Context() context.Context     { return f.cur.Context() }

// directForFlow returns the direct connection when a new flow should use it, or nil.
func (s *Session) directForFlow() *directConn {
	s.mu.Lock()
	d := s.direct
	s.mu.Unlock()
	if d == nil || !d.ready() {
		return nil
	}
	return d
}

// transportLocked says what carries new flows now, and why not the direct port when it was asked
// for; s.mu must be held.
func (s *Session) transportLocked() (Transport, error) {
	switch {
	case s.direct != nil && s.direct.ready():
		return TransportDirect, nil
	case s.direct != nil:
		return TransportPortForward, fmt.Errorf("%w: the connection to %v is down; new flows use the port-forward until it is back",
			ErrDirectUnavailable, s.direct.addrs)
	}
	if s.cfg.Transport == TransportAuto && errors.Is(s.directErr, errNotInstalled) {
		return TransportPortForward, nil
	}
	return TransportPortForward, s.directErr
}
