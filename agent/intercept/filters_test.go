package intercept

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"teledock.dev/teledock/agent/forward"
	"teledock.dev/teledock/agent/internal/managertest"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

func headerFilter(name, value string) *managerv1.HttpFilter {
	return &managerv1.HttpFilter{Headers: []*managerv1.HttpHeaderMatch{{Name: name, Value: value}}}
}

// eofConn is a connection that has nothing to say.
type eofConn struct{}

func (eofConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (eofConn) Write(p []byte) (int, error) { return len(p), nil }
func (eofConn) Close() error                { return nil }
func (eofConn) CloseWrite() error           { return nil }

func TestRouterSetFiltered(t *testing.T) {
	app := forward.Destination{Name: "app", Dial: func(context.Context, string, forward.Target) (forward.Conn, error) { return nil, nil }}
	web := forward.Target{Network: "tcp", AgentPort: 9900, AppPort: 8080}
	dns := forward.Target{Network: "udp", AgentPort: 9901, AppPort: 53}
	tcp, udp := managerv1.Protocol_PROTOCOL_TCP, managerv1.Protocol_PROTOCOL_UDP
	alice, bob := headerFilter("x-dev", "alice"), headerFilter("x-dev", "bob")
	for _, tc := range []struct {
		name     string
		targets  []*managerv1.AgentTarget
		want     []string
		wantWeb  string // the name of the destination; "HTTP …" ones must Serve
		wantDNS  string
		wiretaps bool
	}{
		{name: "two filtered intercepts", targets: []*managerv1.AgentTarget{
			{AgentPort: 9900, Protocol: tcp, InterceptId: "i1", HttpFilter: alice},
			{AgentPort: 9900, Protocol: tcp, InterceptId: "i2", HttpFilter: bob},
		}, want: []string{"9900/tcp=i1(http)+i2(http)"}, wantWeb: "HTTP routes of i1,i2 (else app)", wantDNS: "app"},
		{name: "whole intercept keeps the join", targets: []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: tcp, InterceptId: "i1"}},
			want: []string{"9900/tcp=i1"}, wantWeb: "intercept i1", wantDNS: "app"},
		{name: "plaintext alone is whole", targets: []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: tcp, InterceptId: "i1", HttpFilter: &managerv1.HttpFilter{Plaintext: true}}},
			want: []string{"9900/tcp=i1"}, wantWeb: "intercept i1", wantDNS: "app"},
		{name: "filter of a UDP target ignored", targets: []*managerv1.AgentTarget{{AgentPort: 9901, Protocol: udp, InterceptId: "i2", HttpFilter: alice}},
			want: []string{}, wantWeb: "app", wantDNS: "app"},
		{name: "bad filter ignored", targets: []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: tcp, InterceptId: "i1", HttpFilter: headerFilter("x-dev", "(")}},
			want: []string{}, wantWeb: "app", wantDNS: "app"},
		{name: "whole with a wiretap", wiretaps: true, targets: []*managerv1.AgentTarget{
			{AgentPort: 9900, Protocol: tcp, InterceptId: "i1"},
			{AgentPort: 9900, Protocol: tcp, InterceptId: "i3", Wiretap: true},
		}, want: []string{"9900/tcp=i1+i3(wiretap)"}, wantWeb: "HTTP routes of i3 (else intercept i1)", wantDNS: "app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wiretaps {
			}
			r, err := NewRouter(managertest.Logger(t), noTunnels{}, app, netip.MustParseAddr("10.1.2.3"))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Reset()
			r.Set("s1", tc.targets)
			if got := r.Intercepted(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("intercepted %q, want %q", got, tc.want)
			}
			dst := r.Route(forward.Flow{Target: web})
			if dst.Name != tc.wantWeb || (dst.Serve != nil) != strings.HasPrefix(tc.wantWeb, "HTTP") || dst.Dial == nil {
				t.Errorf("tcp flow goes to %q (serves: %v), want %q", dst.Name, dst.Serve != nil, tc.wantWeb)
			}
			if got := r.Route(forward.Flow{Target: dns}); got.Name != tc.wantDNS || got.Serve != nil {
				t.Errorf("udp flow goes to %q, want %q", got.Name, tc.wantDNS)
			}
		})
	}
}

// nameServer answers every request with its name and records the x-dev header of each.
type nameServer struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

func newNameServer(t *testing.T, name string) *nameServer {
	t.Helper()
	s := &nameServer{name: name}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.URL.Path+" "+r.Header.Get("x-dev"))
		s.mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *nameServer) port() uint16 { return uint16(s.srv.Listener.Addr().(*net.TCPAddr).Port) }

func (s *nameServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// filteredSetup runs a forwarder in front of app whose router the test Sets, with a fake manager
// that delivers each intercept's connections to its own developer.
func filteredSetup(t *testing.T, app *nameServer, devs map[string]*nameServer) (*Router, *forward.Forwarder, *managertest.Manager, string) {
	t.Helper()
	m := managertest.Start(t)
	for id, d := range devs {
		m.SetDeveloperFor(id, d.srv.Listener.Addr().String())
	}
	mgr := client(t, m)
	sess, err := mgr.ArriveAgent(context.Background(), &managerv1.AgentInfo{PodName: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	log := managertest.Logger(t)
	r, err := NewRouter(log, mgr, forward.App("127.0.0.1"), netip.MustParseAddr("10.1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Reset)
	target := forward.Target{Name: "web", Network: "tcp", Listen: "127.0.0.1:0", AppPort: app.port(), AgentPort: 9900}
	fwd, err := forward.New(log, forward.Config{Targets: []forward.Target{target}, Router: r.Route})
	if err != nil {
		t.Fatal(err)
	}
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })
	return r, fwd, m, sess.GetSessionId()
}

// get sends a GET with an x-dev header (none when dev is "") on client and returns the body.
func get(t *testing.T, client *http.Client, url, dev string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dev != "" {
		req.Header.Set("x-dev", dev)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s (x-dev %q): %v", url, dev, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// oneConnection is an HTTP/1.1 client that keeps one keep-alive connection.
func oneConnection(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestFilteredIntercepts: requests of one keep-alive connection go to alice, bob or the app by
// their header; the counters count each intercept's requests and are reported to the manager;
// when alice's intercept goes, her requests go to the app and bob's still to bob, on the same
// connection.
func TestFilteredIntercepts(t *testing.T) {
	app, alice, bob := newNameServer(t, "app"), newNameServer(t, "alice"), newNameServer(t, "bob")
	r, fwd, m, session := filteredSetup(t, app, map[string]*nameServer{"i-alice": alice, "i-bob": bob})
	r.Set(session, []*managerv1.AgentTarget{
		{AgentPort: 9900, TargetPort: int32(app.port()), Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: "i-alice", HttpFilter: headerFilter("x-dev", "alice")},
		{AgentPort: 9900, TargetPort: int32(app.port()), Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: "i-bob", HttpFilter: headerFilter("x-dev", "bob")},
	})
	url := "http://" + fwd.Addrs()[0].String() + "/x"
	c := oneConnection(t)
	for i, dev := range []string{"alice", "", "bob", "alice", "carol", "bob", ""} {
		want := dev
		if dev == "" || dev == "carol" {
			want = "app"
		}
		if got := get(t, c, url, dev); got != want {
			t.Errorf("request %d (x-dev %q) answered by %q, want %q", i, dev, got, want)
		}
	}
	if got := fwd.Stats().Conns; got > 1 {
		t.Errorf("%d connections to the agent, want the one keep-alive connection", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Reports(ctx, ReportConfig{Log: managertest.Logger(t), Manager: client(t, m), Router: r, Interval: 20 * time.Millisecond})
	}()
	// The counts are of requests, although httproute carried each developer's two requests on
	// one connection to it.
	want := map[string]uint64{"i-alice": 2, "i-bob": 2}
	var got map[string]uint64
	managertest.WaitFor(t, "a report with the counters", func() bool {
		reports := m.Reports()
		if len(reports) == 0 {
			return false
		}
		last := reports[len(reports)-1]
		got = map[string]uint64{}
		for _, c := range last.GetIntercepts() {
			got[c.GetInterceptId()] = c.GetCounters().GetIntercepted()
		}
		return last.GetSessionId() == session && len(got) == 2
	})
	if !maps.Equal(got, want) {
		t.Errorf("reported intercepted = %v, want %v", got, want)
	}
	n := len(m.Reports())
	time.Sleep(100 * time.Millisecond) // unchanged counters are not sent again
	if len(m.Reports()) != n {
		t.Errorf("%d reports of unchanged counters, want none", len(m.Reports())-n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Reports: %v", err)
	}

	r.Set(session, []*managerv1.AgentTarget{
		{AgentPort: 9900, TargetPort: int32(app.port()), Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: "i-bob", HttpFilter: headerFilter("x-dev", "bob")},
	})
	// The same keep-alive connection follows the change: routes are chosen per request.
	if got := get(t, c, url, "alice"); got != "app" {
		t.Errorf("alice's request after she left: %q, want app", got)
	}
	if got := get(t, c, url, "bob"); got != "bob" {
		t.Errorf("bob's request after alice left: %q, want bob", got)
	}
	if got := fwd.Stats().Conns; got > 1 {
		t.Errorf("%d connections to the agent, want the one keep-alive connection", got)
	}
	if _, counters := r.Counters(); len(counters) != 1 || counters[0].GetInterceptId() != "i-bob" {
		t.Errorf("counters after alice left: %v", counters)
	}
}

// TestWiretap: the app answers every request, and the wiretap's handler gets a copy of each.
func TestWiretap(t *testing.T) {
	app, tap := newNameServer(t, "app"), newNameServer(t, "tap")
	r, fwd, _, session := filteredSetup(t, app, map[string]*nameServer{"i-tap": tap})
	r.Set(session, []*managerv1.AgentTarget{
		{AgentPort: 9900, TargetPort: int32(app.port()), Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: "i-tap", Wiretap: true},
	})
	url := "http://" + fwd.Addrs()[0].String()
	c := oneConnection(t)
	const n = 5
	for i := range n {
		if got := get(t, c, url+"/r"+strconv.Itoa(i), "anyone"); got != "app" {
			t.Errorf("request %d answered by %q, want the app", i, got)
		}
	}
	managertest.WaitFor(t, "the wiretap's handler saw every request", func() bool { return len(tap.requests()) == n })
	for i, got := range tap.requests() {
		if want := "/r" + strconv.Itoa(i) + " anyone"; got != want {
			t.Errorf("copy %d: %q, want %q", i, got, want)
		}
	}
	managertest.WaitFor(t, "the copies are counted", func() bool {
		_, counters := r.Counters()
		return len(counters) == 1 && counters[0].GetCounters().GetCopied() == n
	})
	if len(app.requests()) != n {
		t.Errorf("the app answered %d requests, want %d", len(app.requests()), n)
	}
	// A Set with the same wiretap keeps its Tap; one without it closes the Tap.
	r.Set(session, []*managerv1.AgentTarget{
		{AgentPort: 9900, TargetPort: int32(app.port()), Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: "i-tap", Wiretap: true},
	})
	if _, counters := r.Counters(); len(counters) != 1 || counters[0].GetCounters().GetCopied() != n {
		t.Errorf("counters after the same Set: %v", counters)
	}
	r.Set(session, nil)
	if got := get(t, oneConnection(t), url+"/after", ""); got != "app" {
		t.Errorf("after the wiretap: %q", got)
	}
	if got := len(tap.requests()); got != n {
		t.Errorf("the handler got %d copies after the wiretap ended, want %d", got, n)
	}
}

// TestReports: the counters of filtered intercepts are reported once per change of session or
// counts, and not at all without a session or filtered intercepts.
func TestReports(t *testing.T) {
	app := newNameServer(t, "app")
	r, _, m, session := filteredSetup(t, app, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = Reports(ctx, ReportConfig{Log: managertest.Logger(t), Manager: client(t, m), Router: r, Interval: 10 * time.Millisecond})
	}()
	r.Set(session, []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: "i1"}})
	time.Sleep(50 * time.Millisecond) // nothing to report: time must pass, not readiness
	if n := len(m.Reports()); n != 0 {
		t.Fatalf("%d reports without filtered intercepts", n)
	}
	r.Set(session, []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: managerv1.Protocol_PROTOCOL_TCP, InterceptId: "i1", HttpFilter: headerFilter("x-dev", "a")}})
	managertest.WaitFor(t, "a report", func() bool { return len(m.Reports()) == 1 })
	got := m.Reports()[0]
	if got.GetSessionId() != session || len(got.GetIntercepts()) != 1 || got.GetIntercepts()[0].GetInterceptId() != "i1" {
		t.Errorf("report %v", got)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(m.Reports()); n != 1 {
		t.Errorf("%d reports of unchanged counters, want 1", n)
	}
}
