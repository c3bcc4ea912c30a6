package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/agent/internal/managertest"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// serveEcho answers each connection with prefix and everything the peer sent, once the peer has
// half-closed. It returns the listening port on 127.0.0.1.
func serveEcho(tb testing.TB, prefix string) uint16 {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				in, err := io.ReadAll(c)
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, prefix+string(in))
			}()
		}
	}()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func hostPort(port uint16) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) }

// request sends msg to port, half-closes, and returns the answer ("" when the connection fails).
func request(port uint16, msg string) string {
	c, err := net.DialTimeout("tcp", hostPort(port), time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return ""
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	return string(b)
}

// eventually waits until port answers msg with want.
func eventually(tb testing.TB, port uint16, msg, want string) {
	tb.Helper()
	var got string
	managertest.WaitFor(tb, "answer "+strconv.Quote(want), func() bool {
		got = request(port, msg)
		return got == want
	})
}

// testAgent is an agent in front of an echo app, with its ports on 127.0.0.1.
type testAgent struct {
	agentPort, appPort, healthPort uint16
	done                           chan error
	cancel                         context.CancelFunc
	stopped                        bool
}

func startAgent(t *testing.T, opts Options) *testAgent {
	t.Helper()
	ta := &testAgent{appPort: serveEcho(t, "app:"), agentPort: freePort(t), healthPort: freePort(t), done: make(chan error, 1)}
	cfg := testConfig()
	cfg.HealthPort = ta.healthPort
	cfg.Targets = []agentconfig.Target{{ServiceName: "cart", ServicePort: 80, Protocol: agentconfig.TCP,
		ContainerName: "app", ContainerPort: ta.appPort, AgentPort: ta.agentPort, Mode: agentconfig.ModeRedirect}}
	opts.Version = "v-test"
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 100 * time.Millisecond
	}
	a, err := New(managertest.Logger(t), cfg, Pod{Name: "cart-1", Namespace: "shop", IP: "10.1.2.3"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		ta.stop(t)
		checkNoLeaks(t)
	})
	return ta
}

// checkNoLeaks fails the test if goroutines of the agent's packages outlive Run.
func checkNoLeaks(tb testing.TB) {
	tb.Helper()
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		left = left[:0]
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, fn := range []string{"teledock/agent.(*Agent)", "teledock/agent/forward.", "teledock/agent/intercept.",
				"teledock/agent/session.", "teledock/tunnel.(*Conn)"} {
				if strings.Contains(g, fn) {
					left = append(left, g)
					break
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d goroutines left after Run:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop cancels the agent and waits for Run; it may be called more than once.
func (ta *testAgent) stop(tb testing.TB) {
	tb.Helper()
	ta.cancel()
	if ta.stopped {
		return
	}
	ta.stopped = true
	select {
	case err := <-ta.done:
		if err != nil {
			tb.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		tb.Fatal("Run does not return after cancel")
	}
}

func (ta *testAgent) target(interceptID string) *managerv1.AgentTarget {
	return &managerv1.AgentTarget{AgentPort: int32(ta.agentPort), TargetPort: int32(ta.appPort),
		Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: interceptID}
}

func TestInterceptSwitch(t *testing.T) {
	m := managertest.Start(t)
	m.SetDeveloper(hostPort(serveEcho(t, "dev:")))
	ta := startAgent(t, Options{DialManager: m.Dial})
	managertest.WaitFor(t, "the agent to watch", func() bool { return len(m.Watching()) == 1 })

	arr := m.Arrivals()
	if got := arr[0]; got.GetPodName() != "cart-1" || got.GetNamespace() != "shop" || got.GetPodIp() != "10.1.2.3" ||
		got.GetWorkloadKind() != "Deployment" || got.GetWorkloadName() != "cart" || got.GetVersion() != "v-test" ||
		!slices.Equal(got.GetCapabilities(), []managerv1.AgentCapability{managerv1.AgentCapability_AGENT_CAPABILITY_HTTP_FILTERS}) {
		t.Errorf("arrived as %v", got)
	}

	t.Log("not intercepted: the app answers")
	if got := request(ta.agentPort, "hi"); got != "app:hi" {
		t.Fatalf("before the intercept: %q", got)
	}

	t.Log("intercepted: the developer answers, through an AgentTunnel")
	m.SetTargets(ta.target("icpt-1"))
	eventually(t, ta.agentPort, "hi", "dev:hi")
	d := <-m.Dials
	if d.GetSessionId() != "agent-1" || d.GetInterceptId() != "icpt-1" || d.GetTargetPort() != int32(ta.appPort) ||
		d.GetProtocol() != managerv1.Protocol_PROTOCOL_TCP || d.GetAddress() != "10.1.2.3:"+strconv.Itoa(int(ta.appPort)) {
		t.Errorf("AgentTunnel dial %v", d)
	}

	t.Log("a connection opened while intercepted keeps going to the developer after the intercept ends")
	open, err := net.Dial("tcp", hostPort(ta.agentPort))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := io.WriteString(open, "before "); err != nil {
		t.Fatal(err)
	}
	<-m.Dials // the open connection has reached the developer

	m.SetTargets(ta.target(""))
	eventually(t, ta.agentPort, "hi", "app:hi")
	if _, err := io.WriteString(open, "after"); err != nil {
		t.Fatal(err)
	}
	_ = open.(*net.TCPConn).CloseWrite()
	_ = open.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(open); string(got) != "dev:before after" || err != nil {
		t.Errorf("the open connection got %q, %v", got, err)
	}
	if n := len(m.Arrivals()); n != 1 {
		t.Errorf("the agent arrived %d times; ending an intercept must not drop its session", n)
	}
	if got := m.Departed(); len(got) != 0 {
		t.Errorf("departed %v", got)
	}

	t.Log("the agent departs when it stops")
	ta.stop(t)
	if got := m.Departed(); len(got) != 1 || got[0] != "agent-1" {
		t.Errorf("departed %v, want [agent-1]", got)
	}
}

func TestToPod(t *testing.T) {
	m := managertest.Start(t)
	ta := startAgent(t, Options{DialManager: m.Dial})
	managertest.WaitFor(t, "the agent to watch", func() bool { return len(m.Watching()) == 1 })

	for _, tc := range []struct {
		name       string
		address    string
		wantOK     bool
		wantReason managerv1.DialError
	}{
		{name: "the pod's localhost", address: hostPort(ta.appPort), wantOK: true},
		{name: "localhost by name", address: "localhost:" + strconv.Itoa(int(ta.appPort)), wantOK: true},
		{name: "another pod", address: "10.0.0.1:80", wantReason: managerv1.DialError_DIAL_ERROR_BAD_REQUEST},
		{name: "a name", address: "example.com:80", wantReason: managerv1.DialError_DIAL_ERROR_BAD_REQUEST},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.SendDial("conn-"+tc.name, "icpt-1")
			var acc *managertest.Accepted
			select {
			case acc = <-m.Accepts:
			case <-time.After(10 * time.Second):
				t.Fatal("the agent does not accept")
			}
			defer acc.Done()
			if acc.Accept.GetSessionId() != "agent-1" || acc.Accept.GetConnId() != "conn-"+tc.name {
				t.Errorf("accept %v", acc.Accept)
			}
			res, err := acc.Dial(&managerv1.Dial{SessionId: "client-1", Protocol: managerv1.Protocol_PROTOCOL_TCP,
				Address: tc.address, InterceptId: "icpt-1"})
			if err != nil {
				t.Fatal(err)
			}
			if res.GetOk() != tc.wantOK || res.GetReason() != tc.wantReason {
				t.Fatalf("dial result %v, want ok=%v reason %v", res, tc.wantOK, tc.wantReason)
			}
			if !tc.wantOK {
				return
			}
			if err := acc.Write([]byte("pod"), true); err != nil {
				t.Fatal(err)
			}
			if got, err := acc.ReadAll(); string(got) != "app:pod" || err != nil {
				t.Errorf("read %q, %v", got, err)
			}
		})
	}
}

func TestSessionExpires(t *testing.T) {
	m := managertest.Start(t)
	m.SetDeveloper(hostPort(serveEcho(t, "dev:")))
	ta := startAgent(t, Options{DialManager: m.Dial})
	managertest.WaitFor(t, "the agent to watch", func() bool { return len(m.Watching()) == 1 })
	m.SetTargets(ta.target("icpt-1"))
	eventually(t, ta.agentPort, "hi", "dev:hi")

	m.Expire("agent-1")
	managertest.WaitFor(t, "the agent to arrive again", func() bool {
		w := m.Watching()
		return len(w) == 1 && w[0] == "agent-2"
	})
	// The new session's watch brings the intercept back; its tunnels carry the new session.
	eventually(t, ta.agentPort, "hi", "dev:hi")
	var last *managerv1.Dial
	for len(m.Dials) > 0 {
		last = <-m.Dials
	}
	if last.GetSessionId() != "agent-2" {
		t.Errorf("dial in session %q, want agent-2", last.GetSessionId())
	}
}

func TestManagerDown(t *testing.T) {
	m := managertest.Start(t)
	var up atomic.Bool
	var attempts atomic.Int64
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		attempts.Add(1)
		if !up.Load() {
			return nil, errors.New("connection refused (test)")
		}
		return m.Dial(ctx, addr)
	}
	m.SetDeveloper(hostPort(serveEcho(t, "dev:")))
	m.SetTargets() // nothing intercepted yet
	ta := startAgent(t, Options{DialManager: dial})

	t.Log("the manager is down: the agent is ready and forwards to the app, and keeps trying")
	eventually(t, ta.agentPort, "hi", "app:hi")
	resp, err := http.Get("http://" + hostPort(ta.healthPort) + agentconfig.ReadyPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ready\n" {
		t.Errorf("readiness: %d %q", resp.StatusCode, body)
	}
	managertest.WaitFor(t, "a second attempt", func() bool { return attempts.Load() >= 2 })

	t.Log("the manager comes up: the agent arrives and intercepts work")
	up.Store(true)
	managertest.WaitFor(t, "the agent to watch", func() bool { return len(m.Watching()) == 1 })
	m.SetTargets(ta.target("icpt-1"))
	eventually(t, ta.agentPort, "hi", "dev:hi")
}

func TestWatchBreakFallsBackToApp(t *testing.T) {
	m := managertest.Start(t)
	m.SetDeveloper(hostPort(serveEcho(t, "dev:")))
	ta := startAgent(t, Options{DialManager: m.Dial})
	managertest.WaitFor(t, "the agent to watch", func() bool { return len(m.Watching()) == 1 })
	m.SetTargets(ta.target("icpt-1"))
	eventually(t, ta.agentPort, "hi", "dev:hi")

	// The state the agent had is stale once its watch breaks; the new watch brings it back in the
	// same session.
	m.BreakWatches()
	managertest.WaitFor(t, "the agent to watch again", func() bool { return len(m.Watching()) == 1 })
	eventually(t, ta.agentPort, "hi", "dev:hi")
	if n := len(m.Arrivals()); n != 1 {
		t.Errorf("arrived %d times, want 1", n)
	}
}

func TestHealthPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := testConfig()
	cfg.Targets = []agentconfig.Target{{Protocol: agentconfig.TCP, ContainerName: "app", ContainerPort: 1,
		AgentPort: freePort(t), Mode: agentconfig.ModeRedirect}}
	cfg.HealthPort = uint16(l.Addr().(*net.TCPAddr).Port)
	a, err := New(managertest.Logger(t), cfg, Pod{}, Options{DialManager: func(context.Context, string) (net.Conn, error) {
		return nil, errors.New("no manager here")
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err == nil {
		t.Fatal("Run succeeded with its health port taken")
	}
	// Run closed the agent ports on its way out.
	if l2, err := net.Listen("tcp", hostPort(cfg.Targets[0].AgentPort)); err != nil {
		t.Errorf("agent port still taken: %v", err)
	} else {
		l2.Close()
	}
}
