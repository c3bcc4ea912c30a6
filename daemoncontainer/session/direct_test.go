package session

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/direct"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/tunnel"
)

// countingTunnels answers each Tunnel's Dial with success and counts the streams; with broken set,
// it fails them as a dead transport would.
type countingTunnels struct {
	managerv1.UnimplementedManagerServer
	n      atomic.Int32
	broken atomic.Bool
}

func (c *countingTunnels) Tunnel(s managerv1.Manager_TunnelServer) error {
	return c.answer(s, &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}})
}

// Accept answers each Accept with the agent's Dial, as the manager does when it pairs the two; it
// counts in n too.
func (c *countingTunnels) Accept(s managerv1.Manager_AcceptServer) error {
	return c.answer(s, &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Dial{Dial: &managerv1.Dial{TargetPort: 80}}})
}

// answer counts the stream, reads its first message and sends reply, or fails as a dead transport.
func (c *countingTunnels) answer(s managerv1.Manager_TunnelServer, reply *managerv1.TunnelMessage) error {
	c.n.Add(1)
	if _, err := s.Recv(); err != nil {
		return err
	}
	if c.broken.Load() {
		return status.Error(codes.Unavailable, "transport is closing")
	}
	return s.Send(reply)
}

// directFake is the port-forward's fake manager plus a direct port: a TLS server behind the real
// guard, admitting the token that DirectInfo hands out.
type directFake struct {
	*fakeManager
	pf      countingTunnels // tunnels over the port-forward
	direct  countingTunnels // tunnels over the direct port
	srv     *grpc.Server
	raw     *tunnel.Server // serves the raw tunnels, dialing for real
	addr    string
	ca      []byte
	enabled bool

	mu     sync.Mutex
	tokens map[string]string // token -> session
	asked  int
}

func (f *directFake) Tunnel(s managerv1.Manager_TunnelServer) error { return f.pf.Tunnel(s) }
func (f *directFake) Accept(s managerv1.Manager_AcceptServer) error { return f.pf.Accept(s) }

func (f *directFake) DirectInfo(_ context.Context, r *managerv1.SessionRequest) (*managerv1.DirectInfoResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	if !f.enabled {
		return nil, status.Error(codes.FailedPrecondition, "the direct transport is not installed")
	}
	token := "token-" + r.GetSessionId()
	f.tokens[token] = r.GetSessionId()
	return &managerv1.DirectInfoResponse{Addresses: []string{"127.0.0.1:1", f.addr}, CaCert: f.ca,
		ServerName: "traffic-manager-direct.teledock.svc", Token: token}, nil
}

// startDirectFake serves the direct port as the manager does (cluster/direct's Mux: gRPC and raw
// tunnels on one TLS port).
func startDirectFake(t testing.TB, enabled bool) (*directFake, *pipeDialer) {
	return startDirectFakeWith(t, enabled, false)
}

// startDirectFakeWith with legacy serves gRPC only, with gRPC's own TLS, as managers did before raw
// tunnels.
func startDirectFakeWith(t testing.TB, enabled, legacy bool) (*directFake, *pipeDialer) {
	t.Helper()
	f := &directFake{fakeManager: &fakeManager{live: map[string]bool{}}, enabled: enabled, tokens: map[string]string{}}
	certs, err := inject.NewServingCerts("traffic-manager-direct", "teledock", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.ca = certs.CACert
	pair, err := tls.X509KeyPair(certs.Cert, certs.Key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := direct.New(func(tok string) (string, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		id, ok := f.tokens[tok]
		return id, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	serverTLS := &tls.Config{Certificates: []tls.Certificate{pair}}
	var d net.Dialer
	if f.raw, err = tunnel.NewServer(tunnel.ServerConfig{}, d.DialContext, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	if legacy {
		f.srv = grpc.NewServer(append(g.ServerOptions(), grpc.Creds(credentials.NewTLS(serverTLS)))...)
	} else {
		f.srv = grpc.NewServer(g.ServerOptions()...)
		mux := g.NewMux(lis, serverTLS, f.raw.ServeRaw, testLogger(t))
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = mux.Serve(ctx)
		}()
		// The Mux logs through t: its connections must be done before the test is.
		t.Cleanup(func() {
			cancel()
			_ = mux.Close()
			<-served
		})
		lis = mux.GRPC()
	}
	managerv1.RegisterManagerServer(f.srv, &f.direct)
	healthpb.RegisterHealthServer(f.srv, health.NewServer())
	go func() { _ = f.srv.Serve(lis) }()
	t.Cleanup(f.srv.Stop)

	return f, startServer(t, f)
}

func runSessionWith(t testing.TB, d dialer, transport Transport) *Session {
	t.Helper()
	s := startSession(t, d, Config{ManagerNamespace: "teledock", Name: "test", MaxBackoff: 200 * time.Millisecond,
		Transport: transport, DirectTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// openTunnel opens one Tunnel through the session's client and waits for its DialResult.
func openTunnel(t testing.TB, s *Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.Manager().Tunnel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Dial{Dial: &managerv1.Dial{SessionId: s.SessionID()}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("tunnel: %v", err)
	}
}

func TestTransportAutoUsesDirect(t *testing.T) {
	f, d := startDirectFake(t, true)
	s := runSessionWith(t, d, TransportAuto)
	if st := s.Status(); st.Transport != TransportDirect || st.TransportError != nil {
		t.Fatalf("transport %s (%v), want direct", st.Transport, st.TransportError)
	}
	openTunnel(t, s)
	if f.direct.n.Load() != 1 || f.pf.n.Load() != 0 {
		t.Errorf("tunnels: direct %d, port-forward %d; want 1, 0", f.direct.n.Load(), f.pf.n.Load())
	}

	// The direct port goes away: the session stays, and new flows take the port-forward.
	f.srv.Stop()
	waitFor(t, "fallback", func() bool { return s.Status().Transport == TransportPortForward })
	st := s.Status()
	if !errors.Is(st.TransportError, ErrDirectUnavailable) || st.State != StateConnected {
		t.Errorf("after the break: state %s, transport error %v", st.State, st.TransportError)
	}
	openTunnel(t, s)
	if f.pf.n.Load() != 1 {
		t.Errorf("tunnels over the port-forward after the break: %d, want 1", f.pf.n.Load())
	}
}

func TestTransportWithoutDirect(t *testing.T) {
	tests := []struct {
		transport Transport
		wantErr   bool // auto does not report a manager without the direct port as an error
	}{
		{transport: TransportAuto, wantErr: false},
		{transport: TransportDirect, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(string(tt.transport), func(t *testing.T) {
			f, d := startDirectFake(t, false)
			s := runSessionWith(t, d, tt.transport)
			st := s.Status()
			if st.Transport != TransportPortForward || errors.Is(st.TransportError, ErrDirectUnavailable) != tt.wantErr {
				t.Fatalf("transport %s (%v), want port-forward, error: %v", st.Transport, st.TransportError, tt.wantErr)
			}
			openTunnel(t, s)
			if f.pf.n.Load() != 1 || f.direct.n.Load() != 0 {
				t.Errorf("tunnels: direct %d, port-forward %d; want 0, 1", f.direct.n.Load(), f.pf.n.Load())
			}
		})
	}
}

// An address that does not answer fails the attempt within DirectTimeout; the session carries on.
func TestTransportDirectUnreachable(t *testing.T) {
	f, d := startDirectFake(t, true)
	f.srv.Stop() // the port is offered but nothing answers
	start := time.Now()
	s, err := newSession(Config{ManagerNamespace: "teledock", Name: "test", MaxBackoff: 200 * time.Millisecond,
		Transport: TransportDirect, DirectTimeout: 500 * time.Millisecond}, d, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Run(context.Background()) }()
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("arrival took %s with an unreachable direct port", took)
	}
	if st := s.Status(); st.Transport != TransportPortForward || !errors.Is(st.TransportError, ErrDirectUnavailable) {
		t.Errorf("transport %s (%v), want port-forward with ErrDirectUnavailable", st.Transport, st.TransportError)
	}
}

func TestTransportPortForwardNeverAsks(t *testing.T) {
	f, d := startDirectFake(t, true)
	s := runSessionWith(t, d, TransportPortForward)
	if st := s.Status(); st.Transport != TransportPortForward || st.TransportError != nil {
		t.Errorf("transport %s (%v)", st.Transport, st.TransportError)
	}
	f.mu.Lock()
	asked := f.asked
	f.mu.Unlock()
	if asked != 0 {
		t.Errorf("DirectInfo called %d times with --transport port-forward", asked)
	}
}

// A direct stream that fails before its answer (a connection gRPC still thinks is up) moves to the
// port-forward, Dial and all; the flow does not notice.
func TestTransportFlowMovesToPortForward(t *testing.T) {
	f, d := startDirectFake(t, true)
	s := runSessionWith(t, d, TransportAuto)
	f.direct.broken.Store(true)
	openTunnel(t, s)
	if f.direct.n.Load() != 1 || f.pf.n.Load() != 1 {
		t.Errorf("tunnels: direct %d, port-forward %d; want 1, 1", f.direct.n.Load(), f.pf.n.Load())
	}
}

// TestTransportAcceptMovesToPortForward: an intercepted connection's Accept on a direct connection
// that fails before the manager answers is made again over the port-forward.
func TestTransportAcceptMovesToPortForward(t *testing.T) {
	f, d := startDirectFake(t, true)
	s := runSessionWith(t, d, TransportAuto)
	f.direct.broken.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.Manager().Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: s.SessionID(), ConnId: "c1"}}}); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil || m.GetDial().GetTargetPort() != 80 {
		t.Fatalf("accept: %v, %v; want the agent's dial", m, err)
	}
	if f.direct.n.Load() != 1 || f.pf.n.Load() != 1 {
		t.Errorf("accepts: direct %d, port-forward %d; want 1, 1", f.direct.n.Load(), f.pf.n.Load())
	}
}

func TestParseTransport(t *testing.T) {
	for in, want := range map[string]Transport{"": TransportAuto, "auto": TransportAuto, "direct": TransportDirect, "port-forward": TransportPortForward} {
		if got, err := ParseTransport(in); err != nil || got != want {
			t.Errorf("ParseTransport(%q) = %s, %v", in, got, err)
		}
	}
	if _, err := ParseTransport("udp"); err == nil {
		t.Error("ParseTransport accepts udp")
	}
}
