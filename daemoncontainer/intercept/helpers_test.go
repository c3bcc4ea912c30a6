package intercept

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// fakeManager implements the intercept RPCs of the traffic-manager in memory. Its Accept handler
// hands each accepted stream to the test, which plays the agent's side; its Tunnel handler serves
// --to-pod dials with a tunnel server whose target the test chooses.
type fakeManager struct {
	managerv1.UnimplementedManagerServer
	t testing.TB

	// createErr, when set, fails CreateIntercept.
	createErr error
	// targetPort is what CreateIntercept reports as the intercepted container port.
	targetPort int32
	// podTarget maps a --to-pod Dial's address to where the fake dials (the test's echo server).
	podTarget func(d *managerv1.Dial) (string, string, error)
	// env is the environment CreateIntercept reports, as the manager resolves it from the pod.
	env map[string]string
	// createGate, when set, holds each CreateIntercept until it is closed; createEntered gets the
	// request's name when one is held.
	createGate    chan struct{}
	createEntered chan string

	mu        sync.Mutex // guards the fields below
	creates   []*managerv1.CreateInterceptRequest
	deadlines []time.Duration // time left on each CreateIntercept's deadline; 0 when none
	removes   []*managerv1.RemoveInterceptRequest
	intercept map[string]*managerv1.InterceptInfo // by session/name
	watchers  map[string]chan *managerv1.IncomingDial
	watchOpen chan string          // session IDs, as WatchDials streams open
	accepted  chan acceptedStream  // Accept streams, after their Accept message
	podDials  chan *managerv1.Dial // --to-pod dials as the Tunnel handler saw them
	nextID    int
}

type acceptedStream struct {
	accept *managerv1.Accept
	stream grpc.BidiStreamingServer[managerv1.TunnelMessage, managerv1.TunnelMessage]
	done   chan struct{} // the test closes it to end the handler
}

func newFakeManager(t testing.TB) *fakeManager {
	return &fakeManager{
		t:          t,
		targetPort: 8080,
		intercept:  map[string]*managerv1.InterceptInfo{},
		watchers:   map[string]chan *managerv1.IncomingDial{},
		watchOpen:  make(chan string, 16),
		accepted:   make(chan acceptedStream, 16),
		podDials:   make(chan *managerv1.Dial, 16),
	}
}

func (f *fakeManager) CreateIntercept(ctx context.Context, r *managerv1.CreateInterceptRequest) (*managerv1.InterceptInfo, error) {
	f.mu.Lock()
	gate, entered := f.createGate, f.createEntered
	f.mu.Unlock()
	if gate != nil {
		entered <- r.GetName()
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, r)
	var left time.Duration
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
	}
	f.deadlines = append(f.deadlines, left)
	if f.createErr != nil {
		return nil, f.createErr
	}
	f.nextID++
	info := &managerv1.InterceptInfo{
		Id:                    fmt.Sprintf("i-%d", f.nextID),
		Name:                  r.GetName(),
		Namespace:             r.GetNamespace(),
		Workload:              r.GetWorkload(),
		WorkloadKind:          "Deployment",
		State:                 "ACTIVE",
		ServicePortIdentifier: r.GetPort(),
		TargetPort:            f.targetPort,
		Protocol:              managerv1.Protocol_PROTOCOL_TCP,
		Destination:           r.GetDestination(),
		LocalPort:             r.GetLocalPort(),
		SessionId:             r.GetSessionId(),
		Client:                "test@host",
		ToPod:                 r.GetToPod(),
		Environment:           f.env,
	}
	f.intercept[r.GetSessionId()+"/"+r.GetName()] = info
	return info, nil
}

func (f *fakeManager) RemoveIntercept(_ context.Context, r *managerv1.RemoveInterceptRequest) (*managerv1.RemoveInterceptResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removes = append(f.removes, r)
	key := r.GetSessionId() + "/" + r.GetName()
	if f.intercept[key] == nil {
		return nil, status.Errorf(codes.NotFound, "no intercept %s", r.GetName())
	}
	delete(f.intercept, key)
	return &managerv1.RemoveInterceptResponse{}, nil
}

func (f *fakeManager) ListWorkloads(_ context.Context, r *managerv1.ListWorkloadsRequest) (*managerv1.ListWorkloadsResponse, error) {
	return &managerv1.ListWorkloadsResponse{Workloads: []*managerv1.WorkloadInfo{{
		Kind: "Deployment", Name: "echo", Namespace: r.GetNamespace(),
		State: "ready to intercept (traffic-agent not yet installed)",
	}}}, nil
}

func (f *fakeManager) WatchDials(r *managerv1.SessionRequest, stream grpc.ServerStreamingServer[managerv1.IncomingDial]) error {
	ch := make(chan *managerv1.IncomingDial, 16)
	f.mu.Lock()
	f.watchers[r.GetSessionId()] = ch
	f.mu.Unlock()
	f.watchOpen <- r.GetSessionId()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case in := <-ch:
			if err := stream.Send(in); err != nil {
				return err
			}
		}
	}
}

// announce sends an IncomingDial on the session's WatchDials stream.
func (f *fakeManager) announce(t testing.TB, sessionID string, in *managerv1.IncomingDial) {
	t.Helper()
	f.mu.Lock()
	ch := f.watchers[sessionID]
	f.mu.Unlock()
	if ch == nil {
		t.Fatalf("no WatchDials stream for session %s", sessionID)
	}
	ch <- in
}

func (f *fakeManager) Accept(stream grpc.BidiStreamingServer[managerv1.TunnelMessage, managerv1.TunnelMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	a := first.GetAccept()
	if a == nil {
		return status.Error(codes.InvalidArgument, "first message is not an Accept")
	}
	done := make(chan struct{})
	f.accepted <- acceptedStream{accept: a, stream: stream, done: done}
	select {
	case <-done:
	case <-stream.Context().Done():
	}
	return nil
}

func (f *fakeManager) Tunnel(stream grpc.BidiStreamingServer[managerv1.TunnelMessage, managerv1.TunnelMessage]) error {
	srv, err := tunnel.NewServer(tunnel.ServerConfig{Target: func(d *managerv1.Dial) (string, string, error) {
		f.podDials <- d
		return f.podTarget(d)
	}}, (&net.Dialer{}).DialContext, testLogger(f.t))
	if err != nil {
		return err
	}
	return srv.Serve(stream)
}

func (f *fakeManager) createCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.creates)
}

func (f *fakeManager) lastCreate() (*managerv1.CreateInterceptRequest, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.creates) == 0 {
		return nil, 0
	}
	return f.creates[len(f.creates)-1], f.deadlines[len(f.deadlines)-1]
}

// startManager serves the fake over bufconn and returns a client for it.
func startManager(t testing.TB, f *fakeManager) managerv1.ManagerClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	managerv1.RegisterManagerServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///manager",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return managerv1.NewManagerClient(conn)
}

// fakeSession is a session whose ID the test sets.
type fakeSession struct {
	mgr managerv1.ManagerClient

	mu      sync.Mutex
	id      string
	changed chan struct{}
}

func newFakeSession(mgr managerv1.ManagerClient, id string) *fakeSession {
	return &fakeSession{mgr: mgr, id: id, changed: make(chan struct{})}
}

func (s *fakeSession) Manager() managerv1.ManagerClient { return s.mgr }

func (s *fakeSession) Current() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id, s.changed
}

func (s *fakeSession) setID(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id = id
	close(s.changed)
	s.changed = make(chan struct{})
}

// startIntercepts runs Intercepts against the fake manager with session "s1".
func startIntercepts(t testing.TB, f *fakeManager) (*Intercepts, *fakeSession) {
	t.Helper()
	return startInterceptsLog(t, f, testLogger(t))
}

func startInterceptsLog(t testing.TB, f *fakeManager, log *slog.Logger) (*Intercepts, *fakeSession) {
	t.Helper()
	sess := newFakeSession(startManager(t, f), "s1")
	m, err := New(Config{Namespace: "app", MaxBackoff: 100 * time.Millisecond}, sess, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = m.Close()
	})
	return m, sess
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Logf("%s", p); return len(p), nil }

// tcpEcho serves an echo on a loopback port: it sends back what it reads and half-closes at EOF.
func tcpEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return lis.Addr().(*net.TCPAddr).AddrPort()
}

// udpEcho answers every datagram with "echo:" and the datagram.
func udpEcho(t testing.TB) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, src, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), src)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// freePort returns a loopback port that was free a moment ago, for listeners the code opens itself.
func freePort(t testing.TB, network string) uint16 {
	t.Helper()
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	default:
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		return uint16(lis.Addr().(*net.TCPAddr).Port)
	}
}

// agentStream adapts an accepted stream (the manager's side of Accept) to tunnel.ClientStream, so
// that the test can play the initiator with tunnel.DialStream. When the tunnel conn cancels its
// stream context, the Accept handler is released.
type agentStream struct {
	grpc.BidiStreamingServer[managerv1.TunnelMessage, managerv1.TunnelMessage]
}

// CloseSend is a no-op: a server-side stream closes its sending side by returning, which the test
// does through Conn.Close (see dialAccepted).
func (agentStream) CloseSend() error { return nil }

// dialAccepted plays the agent: it sends d on the accepted stream and returns the tunnel conn.
func dialAccepted(t testing.TB, a acceptedStream, d *managerv1.Dial, network string, dst netip.AddrPort) (*tunnel.Conn, error) {
	t.Helper()
	open := func(ctx context.Context) (tunnel.ClientStream, error) {
		context.AfterFunc(ctx, func() { close(a.done) })
		return agentStream{a.stream}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return tunnel.DialStream(ctx, open, d, network, dst)
}

func waitAccepted(t testing.TB, f *fakeManager) acceptedStream {
	t.Helper()
	select {
	case a := <-f.accepted:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no Accept stream")
	}
	return acceptedStream{}
}

func waitWatch(t testing.TB, f *fakeManager, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case id := <-f.watchOpen:
			if id == want {
				return
			}
		case <-deadline:
			t.Fatalf("no WatchDials stream for session %s", want)
		}
	}
}

// has reports whether the fake holds the session's intercept of that name.
func (f *fakeManager) has(sessionID, name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.intercept[sessionID+"/"+name] != nil
}
