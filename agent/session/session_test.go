package session

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"teledock.dev/teledock/agent/internal/managertest"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// recorder is a Handler that writes down what it is told.
type recorder struct {
	mu     sync.Mutex // guards events
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) Targets(session string, ts []*managerv1.AgentTarget) {
	e := "targets " + session + ":"
	for _, t := range ts {
		e += " " + t.GetInterceptId()
	}
	r.add(e)
}

func (r *recorder) Dial(session string, d *managerv1.IncomingDial) {
	r.add("dial " + session + " " + d.GetConnId())
}

func (r *recorder) Lost() { r.add("lost") }

func (r *recorder) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) has(e string) bool { return slices.Contains(r.Events(), e) }

func target(id string) *managerv1.AgentTarget {
	return &managerv1.AgentTarget{AgentPort: 9900, TargetPort: 8080, Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: id}
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		update *managerv1.AgentUpdate
		want   []string
	}{
		{name: "state", update: &managerv1.AgentUpdate{Targets: []*managerv1.AgentTarget{target("i1"), target("")}},
			want: []string{"targets s: i1 "}},
		{name: "empty state means nothing is intercepted", update: &managerv1.AgentUpdate{},
			want: []string{"targets s:"}},
		{name: "a dial leaves the state alone", update: &managerv1.AgentUpdate{Dial: &managerv1.IncomingDial{ConnId: "c1"}},
			want: []string{"dial s c1"}},
		{name: "a dial with a state", update: &managerv1.AgentUpdate{
			Targets: []*managerv1.AgentTarget{target("i1")}, Dial: &managerv1.IncomingDial{ConnId: "c1"}},
			want: []string{"dial s c1", "targets s: i1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			s := newTestSession(t, nil, &r)
			s.apply("s", tc.update)
			if got := r.Events(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	info := &managerv1.AgentInfo{PodName: "p"}
	var mgr Manager = managerv1.NewManagerClient(nil)
	log := managertest.Logger(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		mgr  Manager
		h    Handler
	}{
		{name: "no info", mgr: mgr, h: &recorder{}},
		{name: "no manager", cfg: Config{Info: info}, h: &recorder{}},
		{name: "no handler", cfg: Config{Info: info}, mgr: mgr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, tc.mgr, tc.h, log); err == nil {
				t.Error("New accepted it")
			}
		})
	}
	if _, err := New(Config{Info: info}, mgr, &recorder{}, nil); err == nil {
		t.Error("New accepted a nil logger")
	}
}

// client connects to the fake manager.
func client(t *testing.T, m *managertest.Manager) managerv1.ManagerClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///fake", grpc.WithContextDialer(m.Dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return managerv1.NewManagerClient(conn)
}

var testInfo = &managerv1.AgentInfo{PodName: "cart-1", Namespace: "shop", PodIp: "10.1.2.3",
	WorkloadKind: "Deployment", WorkloadName: "cart", Version: "v-test"}

func newTestSession(t *testing.T, mgr Manager, h Handler) *Session {
	t.Helper()
	if mgr == nil {
		mgr = managerv1.NewManagerClient(nil)
	}
	s, err := New(Config{Info: testInfo, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		mgr, h, managertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s until the test ends, and returns a function that stops it and waits.
func run(t *testing.T, s *Session) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run does not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestSessionLifecycle(t *testing.T) {
	m := managertest.Start(t)
	m.SetTargets(target("i1"))
	var r recorder
	stop := run(t, newTestSession(t, client(t, m), &r))

	managertest.WaitFor(t, "the first state", func() bool { return r.has("targets agent-1: i1") })
	if got := m.Arrivals(); len(got) != 1 || !proto.Equal(got[0], testInfo) {
		t.Errorf("arrivals %v", got)
	}

	t.Log("the state and dials follow the manager")
	m.SetTargets(target(""))
	m.SendDial("c1", "i1")
	managertest.WaitFor(t, "the dial", func() bool { return r.has("dial agent-1 c1") })
	if !r.has("targets agent-1: ") {
		t.Errorf("events %q lack the new state", r.Events())
	}

	t.Log("the lease is renewed every lease/3")
	managertest.WaitFor(t, "a heartbeat", func() bool { return m.Remains() >= 1 })

	t.Log("an expired session is reported lost, and the agent arrives again")
	m.Expire("agent-1")
	managertest.WaitFor(t, "the second session's state", func() bool { return r.has("targets agent-2: ") })
	ev := r.Events()
	if i, j := slices.Index(ev, "lost"), slices.Index(ev, "targets agent-2: "); i < 0 || i > j {
		t.Errorf("events %q: want lost before the new session's state", ev)
	}

	t.Log("stopping departs")
	stop()
	if got := m.Departed(); !reflect.DeepEqual(got, []string{"agent-2"}) {
		t.Errorf("departed %v", got)
	}
	if ev := r.Events(); ev[len(ev)-1] != "lost" {
		t.Errorf("the last event is %q, want lost", ev[len(ev)-1])
	}
}

func TestWatchAgainAfterBreak(t *testing.T) {
	m := managertest.Start(t)
	m.SetTargets(target("i1"))
	var r recorder
	run(t, newTestSession(t, client(t, m), &r))
	managertest.WaitFor(t, "the first state", func() bool { return r.has("targets agent-1: i1") })

	m.BreakWatches()
	managertest.WaitFor(t, "the state again", func() bool {
		ev := r.Events()
		return len(ev) >= 3 && ev[len(ev)-2] == "lost" && ev[len(ev)-1] == "targets agent-1: i1"
	})
	if n := len(m.Arrivals()); n != 1 {
		t.Errorf("arrived %d times; a broken watch must not end the session", n)
	}
}

// flaky fails the first failures arrivals as an unreachable manager would.
type flaky struct {
	Manager
	failures int64
	calls    atomic.Int64
}

func (f *flaky) ArriveAgent(ctx context.Context, in *managerv1.AgentInfo, opts ...grpc.CallOption) (*managerv1.Session, error) {
	if f.calls.Add(1) <= f.failures {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return f.Manager.ArriveAgent(ctx, in, opts...)
}

func TestArriveRetries(t *testing.T) {
	m := managertest.Start(t)
	f := &flaky{Manager: client(t, m), failures: 3}
	var r recorder
	start := time.Now()
	run(t, newTestSession(t, f, &r))
	managertest.WaitFor(t, "the session", func() bool { return len(m.Watching()) == 1 })
	if n := f.calls.Load(); n != 4 {
		t.Errorf("%d arrivals, want 4", n)
	}
	// Backoff 10, 20, 40 ms with ±20% jitter.
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("arrived after %v; the retries did not back off", d)
	}
}

func TestRunStopsWhileUnreachable(t *testing.T) {
	f := &flaky{Manager: managerv1.NewManagerClient(nil), failures: 1 << 62}
	stop := run(t, newTestSession(t, f, &recorder{}))
	managertest.WaitFor(t, "retries", func() bool { return f.calls.Load() >= 3 })
	stop()
}

func TestBackoff(t *testing.T) {
	s := &Session{cfg: Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 350 * time.Millisecond}}
	b := s.newBackoff()
	for i, want := range []time.Duration{100, 200, 350, 350} {
		want *= time.Millisecond
		got := b()
		if lo, hi := want*8/10, want*12/10; got < lo || got > hi {
			t.Errorf("wait %d = %v, want %v±20%%", i, got, want)
		}
	}
}

// TestArriveShowsTheToken: every arrival carries the pod's token as read at that moment (the
// kubelet renews the file), and a missing token is retried like an unreachable manager.
func TestArriveShowsTheToken(t *testing.T) {
	m := managertest.Start(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	s, err := New(Config{Info: testInfo, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, TokenFile: tokenFile},
		client(t, m), &recorder{}, managertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.arrive(context.Background()); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("arrive without the token file: %v, want an error about the token", err)
	}
	if err := os.WriteFile(tokenFile, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.arrive(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("tok-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.arrive(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := m.Tokens(); !slices.Equal(got, []string{"Bearer tok-1", "Bearer tok-2"}) {
		t.Errorf("arrivals carried %q, want the token as the file held it each time", got)
	}
}
