package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// fakeManager is an in-memory traffic-manager with sessions that can be expired on demand.
type fakeManager struct {
	managerv1.UnimplementedManagerServer

	mu       sync.Mutex
	next     int
	live     map[string]bool
	departed []string
	remains  int
}

func (m *fakeManager) Version(context.Context, *managerv1.VersionRequest) (*managerv1.VersionInfo, error) {
	return &managerv1.VersionInfo{Version: "v1.2.3", AgentImage: "teledock/agent:v1.2.3"}, nil
}

func (m *fakeManager) ArriveClient(_ context.Context, ci *managerv1.ClientInfo) (*managerv1.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	id := fmt.Sprintf("s%d-%s", m.next, ci.GetName())
	m.live[id] = true
	return &managerv1.Session{SessionId: id, LeaseSeconds: 3}, nil
}

func (m *fakeManager) Remain(_ context.Context, r *managerv1.SessionRequest) (*managerv1.RemainResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remains++
	if !m.live[r.GetSessionId()] {
		return nil, status.Error(codes.NotFound, "no such session")
	}
	return &managerv1.RemainResponse{}, nil
}

func (m *fakeManager) Depart(_ context.Context, r *managerv1.SessionRequest) (*managerv1.DepartResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.live, r.GetSessionId())
	m.departed = append(m.departed, r.GetSessionId())
	return &managerv1.DepartResponse{}, nil
}

func (m *fakeManager) ClusterInfo(context.Context, *managerv1.SessionRequest) (*managerv1.ClusterInfoResponse, error) {
	return &managerv1.ClusterInfoResponse{
		PodSubnets:     []string{"10.244.0.0/16"},
		ServiceSubnets: []string{"10.96.0.0/12"},
		ClusterDomain:  "cluster.local",
		DnsIp:          "10.96.0.10",
	}, nil
}

func (m *fakeManager) LookupDNS(_ context.Context, r *managerv1.DNSRequest) (*managerv1.DNSResponse, error) {
	return &managerv1.DNSResponse{Answer: append([]byte("answer:"), r.GetQuery()...)}, nil
}

func (m *fakeManager) expireAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.live)
}

func (m *fakeManager) departures() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.departed...)
}

// pipeDialer dials the fake manager in memory, or fails with err when it is set.
type pipeDialer struct {
	lis *bufconn.Listener
	mu  sync.Mutex
	err error
}

func (d *pipeDialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	d.mu.Lock()
	err := d.err
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return d.lis.DialContext(ctx)
}

func (d *pipeDialer) dialError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *pipeDialer) closeAll() {}

func startFake(t testing.TB) (*fakeManager, *pipeDialer) {
	t.Helper()
	m := &fakeManager{live: map[string]bool{}}
	return m, startServer(t, m)
}

// startServer serves m in memory and returns the dialer that reaches it.
func startServer(t testing.TB, m managerv1.ManagerServer) *pipeDialer {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	managerv1.RegisterManagerServer(srv, m)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &pipeDialer{lis: lis}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Logf("%s", p); return len(p), nil }

func runSession(t testing.TB, d dialer) *Session {
	t.Helper()
	return startSession(t, d, Config{ManagerNamespace: "teledock", Name: "test", MaxBackoff: 200 * time.Millisecond})
}

// startSession runs a session with cfg until the test ends.
func startSession(t testing.TB, d dialer, cfg Config) *Session {
	t.Helper()
	s, err := newSession(cfg, d, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSessionArrivesAndDeparts(t *testing.T) {
	m, d := startFake(t)
	s := runSession(t, d)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	if st.State != StateConnected || st.SessionID != "s1-test" || st.LastError != nil {
		t.Fatalf("status = %+v", st)
	}
	if got := s.ClusterInfo().GetDnsIp(); got != "10.96.0.10" {
		t.Errorf("cluster dns ip = %q", got)
	}
	if got := st.Manager.GetVersion(); got != "v1.2.3" {
		t.Errorf("manager version = %q", got)
	}
	answer, err := s.Exchange(ctx, []byte("q"))
	if err != nil || string(answer) != "answer:q" {
		t.Errorf("Exchange = %q, %v", answer, err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := m.departures(); len(got) != 1 || got[0] != "s1-test" {
		t.Errorf("departed = %v, want [s1-test]", got)
	}
	if st := s.Status(); st.State != StateClosed || st.SessionID != "" {
		t.Errorf("after Close: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSessionArrivesAgainWhenExpired(t *testing.T) {
	m, d := startFake(t)
	s := runSession(t, d)
	waitFor(t, "first session", func() bool { return s.SessionID() == "s1-test" })

	id, changed := s.Current()
	if id != "s1-test" {
		t.Fatalf("Current = %q", id)
	}

	m.expireAll()
	// The heartbeat runs every lease/3 = 1s; NotFound makes the session arrive again.
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Current's channel not closed at the new arrival")
	}
	waitFor(t, "second session", func() bool { return s.SessionID() == "s2-test" })
	if st := s.Status(); st.State != StateConnected {
		t.Errorf("state = %s", st.State)
	}

	_, changed = s.Current()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Current's channel not closed by Close")
	}
	if id, _ := s.Current(); id != "" {
		t.Errorf("Current after Close = %q", id)
	}
}

func TestSessionKeepsTypedDialError(t *testing.T) {
	tests := []struct {
		name    string
		dialErr error
		want    error
	}{
		{name: "no manager", dialErr: fmt.Errorf("namespace teledock: %w", ErrNoManager), want: ErrNoManager},
		{name: "not ready", dialErr: fmt.Errorf("%w: pod x: ImagePullBackOff", ErrManagerNotReady), want: ErrManagerNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := startFake(t)
			d.err = tt.dialErr
			s := runSession(t, d)
			waitFor(t, "an error", func() bool { return s.Status().LastError != nil })
			st := s.Status()
			if !errors.Is(st.LastError, tt.want) {
				t.Errorf("LastError = %v, want %v", st.LastError, tt.want)
			}
			if st.State != StateConnecting {
				t.Errorf("state = %s, want connecting", st.State)
			}
			if _, err := s.Exchange(context.Background(), nil); !errors.Is(err, ErrNotConnected) {
				t.Errorf("Exchange before arrival: %v", err)
			}

			// The manager appears: the session connects without outside help.
			d.mu.Lock()
			d.err = nil
			d.mu.Unlock()
			waitFor(t, "connected", func() bool { return s.Status().State == StateConnected })
		})
	}
}
