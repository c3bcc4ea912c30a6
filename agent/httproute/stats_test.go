package httproute

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// wantStats checks the Requests and Intercepted of one Stats.
func wantStats(t *testing.T, name string, s *Stats, requests, intercepted uint64) {
	t.Helper()
	if got, got2 := s.Requests.Load(), s.Intercepted.Load(); got != requests || got2 != intercepted {
		t.Errorf("%s: Requests, Intercepted = %d, %d; want %d, %d", name, got, got2, requests, intercepted)
	}
}

// remotes counts the distinct connections a recorder was sent requests on.
func remotes(rec *recorder) int {
	seen := make(map[string]bool)
	for _, r := range rec.requests() {
		seen[r.remote] = true
	}
	return len(seen)
}

// Route.Stats counts requests, not the upstream connections that carry them: over keep-alive
// client connections, each route's kept upstream carries several of its requests.
func TestRouteStatsHTTP1KeepAlive(t *testing.T) {
	app, alice, bob, handler := &recorder{name: "app"}, &recorder{name: "alice"}, &recorder{name: "bob"}, &recorder{name: "handler"}
	addr := make(map[*recorder]string)
	for _, rec := range []*recorder{app, alice, bob, handler} {
		srv := httptest.NewServer(rec)
		t.Cleanup(srv.Close)
		addr[rec] = srv.Listener.Addr().String()
	}
	var port, aliceStats, bobStats, tapStats, tapCopies Stats
	tap := newTestTap(t, TapConfig{Dial: tcpDialer(addr[handler]), Stats: &tapCopies})
	r := startRouter(t, Config{
		App: tcpDialer(addr[app]),
		Routes: []Route{
			{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(addr[alice]), Stats: &aliceStats},
			{Name: "tap", Match: mustCompile(t, Filter{PathPrefix: "/api"}), Tap: tap, Stats: &tapStats},
			{Name: "bob", Match: devHeader("bob"), Dial: tcpDialer(addr[bob]), Stats: &bobStats},
		},
		Stats: &port,
	})

	// Two keep-alive client connections; x-dev of each request, "" for the app.
	conns := [][]string{
		{"alice", "", "alice", "bob", "alice", "alice", "", "bob"},
		{"bob", "alice", "alice", "", "bob", "bob"},
	}
	want := map[string]int{}
	apiRequests := 0
	for ci, devs := range conns {
		c := r.dial(t)
		br := bufio.NewReader(c)
		for i, dev := range devs {
			path := fmt.Sprintf("/web/%d/%d", ci, i)
			if i%2 == 0 {
				path = fmt.Sprintf("/api/%d/%d", ci, i)
				apiRequests++
			}
			req := "GET " + path + " HTTP/1.1\r\nHost: svc\r\n"
			if dev != "" {
				req += "X-Dev: " + dev + "\r\n"
			}
			if _, err := io.WriteString(c, req+"\r\n"); err != nil {
				t.Fatal(err)
			}
			to := dev
			if to == "" {
				to = "app"
			}
			if _, body := readResponse(t, br, "GET"); body != to+" "+path {
				t.Fatalf("response to %s = %q; want %s's", path, body, to)
			}
			want[to]++
		}
		c.Close()
	}
	eventually(t, "the copies", func() bool { return tapCopies.Copied.Load() == uint64(apiRequests) })

	// The premise: fewer upstream connections than requests, so counting the dials would not do.
	if n := remotes(alice); n != 2 || len(alice.requests()) != want["alice"] {
		t.Fatalf("alice got %d requests on %d connections; want %d on 2", len(alice.requests()), n, want["alice"])
	}
	wantStats(t, "alice", &aliceStats, uint64(want["alice"]), uint64(want["alice"]))
	wantStats(t, "bob", &bobStats, uint64(want["bob"]), uint64(want["bob"]))
	// A wiretap answers nothing; its Requests are the requests it got a copy of.
	wantStats(t, "tap", &tapStats, uint64(apiRequests), 0)
	total := want["alice"] + want["bob"] + want["app"]
	wantStats(t, "port", &port, uint64(total), uint64(want["alice"]+want["bob"]))
	if tapStats.Copied.Load() != 0 || aliceStats.Copied.Load() != 0 {
		t.Errorf("route Stats got Copied %d, %d; want them on the Tap's Stats only", tapStats.Copied.Load(), aliceStats.Copied.Load())
	}
}

// A request answered 502 because the intercept is unreachable still went to that intercept.
func TestRouteStatsHTTP1DialFailure(t *testing.T) {
	srv := httptest.NewServer(&recorder{name: "app"})
	defer srv.Close()
	var alice Stats
	r := startRouter(t, Config{
		App:    tcpDialer(srv.Listener.Addr().String()),
		Routes: []Route{{Name: "alice", Match: devHeader("alice"), Dial: failingDialer, Stats: &alice}},
	})
	c := r.dial(t)
	br := bufio.NewReader(c)
	for range 3 {
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\n")
		if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status = %d; want 502", resp.StatusCode)
		}
	}
	wantStats(t, "alice", &alice, 3, 3)
}

// h2c streams of one client connection are counted one by one, for the route each one takes.
func TestRouteStatsH2CStreams(t *testing.T) {
	app, alice, bob, handler := &recorder{name: "app"}, &recorder{name: "alice"}, &recorder{name: "bob"}, &recorder{name: "handler"}
	handlerSrv := httptest.NewServer(handler)
	defer handlerSrv.Close()
	var port, aliceStats, bobStats, tapStats, tapCopies Stats
	tap := newTestTap(t, TapConfig{Dial: tcpDialer(handlerSrv.Listener.Addr().String()), Stats: &tapCopies})
	r := startRouter(t, Config{
		App: tcpDialer(startH2CServer(t, app)),
		Routes: []Route{
			{Name: "tap", Match: mustCompile(t, Filter{PathPrefix: "/api"}), Tap: tap, Stats: &tapStats},
			{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(startH2CServer(t, alice)), Stats: &aliceStats},
			{Name: "bob", Match: devHeader("bob"), Dial: tcpDialer(startH2CServer(t, bob)), Stats: &bobStats},
		},
		Stats: &port,
	})
	client := h2cClient(t)
	// The first request sets up the one client connection; the rest are concurrent streams on it.
	devs := []string{"alice"}
	for i := range 40 {
		devs = append(devs, []string{"alice", "bob", "", "alice", "bob"}[i%5])
	}
	do := func(i int) error {
		dev := devs[i]
		path := fmt.Sprintf("/web/%d", i)
		if i%4 == 0 {
			path = fmt.Sprintf("/api/%d", i)
		}
		req, _ := http.NewRequest("POST", "http://"+r.addr+path, strings.NewReader("body"))
		if dev != "" {
			req.Header.Set("X-Dev", dev)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		to := dev
		if to == "" {
			to = "app"
		}
		if string(body) != to+" "+path || resp.ProtoMajor != 2 {
			return fmt.Errorf("stream %d (x-dev %q) got %s %q", i, dev, resp.Proto, body)
		}
		return nil
	}
	if err := do(0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(devs))
	for i := 1; i < len(devs); i++ {
		wg.Go(func() {
			if err := do(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := map[string]uint64{}
	api := uint64(0)
	for i, dev := range devs {
		want[dev]++
		if i%4 == 0 {
			api++
		}
	}
	eventually(t, "the copies", func() bool { return tapCopies.Copied.Load() == api })
	if n := remotes(alice); n >= int(want["alice"]) {
		t.Fatalf("alice got %d streams on %d connections; the test needs fewer connections than streams", want["alice"], n)
	}
	wantStats(t, "alice", &aliceStats, want["alice"], want["alice"])
	wantStats(t, "bob", &bobStats, want["bob"], want["bob"])
	wantStats(t, "tap", &tapStats, api, 0)
	wantStats(t, "port", &port, uint64(len(devs)), want["alice"]+want["bob"])
}
