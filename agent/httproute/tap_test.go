package httproute

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newTestTap(t *testing.T, cfg TapConfig) *Tap {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testLog(t)
	}
	tap := NewTap(cfg)
	t.Cleanup(func() { tap.Close() })
	return tap
}

func TestWiretapHTTP1(t *testing.T) {
	app, alice, handler := &recorder{name: "app"}, &recorder{name: "alice"}, &recorder{name: "handler"}
	appSrv, aliceSrv, handlerSrv := httptest.NewServer(app), httptest.NewServer(alice), httptest.NewServer(handler)
	defer appSrv.Close()
	defer aliceSrv.Close()
	defer handlerSrv.Close()
	var stats Stats
	tap := newTestTap(t, TapConfig{Dial: tcpDialer(handlerSrv.Listener.Addr().String()), Body: 10, Stats: &stats})
	r := startRouter(t, Config{
		App: tcpDialer(appSrv.Listener.Addr().String()),
		Routes: []Route{
			// The wiretap comes first and the intercept still answers what both match.
			{Name: "tap", Match: mustCompile(t, Filter{PathPrefix: "/api"}), Tap: tap},
			{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(aliceSrv.Listener.Addr().String())},
		},
		Stats: &stats,
	})
	c := r.dial(t)
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /api/1?x=1 HTTP/1.1\r\nHost: svc\r\nX-Trace: t1\r\nContent-Length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyz")
	if _, body := readResponse(t, br, "POST"); body != "app /api/1" {
		t.Fatalf("response = %q; want the app's", body)
	}
	io.WriteString(c, "POST /api/2 HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
	if _, body := readResponse(t, br, "POST"); body != "alice /api/2" {
		t.Fatalf("response = %q; want alice's", body)
	}
	io.WriteString(c, "GET /web HTTP/1.1\r\nHost: svc\r\n\r\n") // not tapped
	if _, body := readResponse(t, br, "GET"); body != "app /web" {
		t.Fatalf("response = %q; want the app's", body)
	}
	eventually(t, "two copies", func() bool { return stats.Copied.Load() == 2 })

	if got := app.uris(); len(got) != 2 || got[0] != "/api/1?x=1" {
		t.Errorf("app saw %v", got)
	}
	if got := alice.uris(); len(got) != 1 {
		t.Errorf("alice saw %v", got)
	}
	copies := handler.requests()
	if len(copies) != 2 {
		t.Fatalf("handler got %d copies; want 2", len(copies))
	}
	// Copies come in order, with the body cut at the cap.
	c1, c2 := copies[0], copies[1]
	if c1.method != "POST" || c1.uri != "/api/1?x=1" || c1.host != "svc" || c1.header.Get("X-Trace") != "t1" || c1.body != "abcdefghij" {
		t.Errorf("first copy = %+v", c1)
	}
	if c2.uri != "/api/2" || c2.header.Get("X-Dev") != "alice" || c2.body != "abcdef" || c2.header.Get("Transfer-Encoding") != "" {
		t.Errorf("second copy = %+v", c2)
	}
	if stats.Dropped.Load() != 0 || stats.Requests.Load() != 3 || stats.Intercepted.Load() != 1 {
		t.Errorf("Dropped, Requests, Intercepted = %d, %d, %d; want 0, 3, 1", stats.Dropped.Load(), stats.Requests.Load(), stats.Intercepted.Load())
	}
}

func TestWiretapH2C(t *testing.T) {
	handler := &recorder{name: "handler"}
	handlerSrv := httptest.NewServer(handler)
	defer handlerSrv.Close()
	var stats Stats
	tap := newTestTap(t, TapConfig{Dial: tcpDialer(handlerSrv.Listener.Addr().String()), Stats: &stats})
	r := startRouter(t, Config{
		App:    tcpDialer(startH2CServer(t, &recorder{name: "app"})),
		Routes: []Route{{Name: "tap", Match: devHeader("alice"), Tap: tap}},
		Stats:  &stats,
	})
	client := h2cClient(t)
	for i, body := range []string{"", "payload"} {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/h2/%d", r.addr, i), strings.NewReader(body))
		req.Host = "svc"
		req.Header.Set("X-Dev", "alice")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != fmt.Sprintf("app /h2/%d", i) {
			t.Fatalf("response = %q", got)
		}
	}
	eventually(t, "two copies", func() bool { return stats.Copied.Load() == 2 })
	copies := handler.requests()
	if len(copies) != 2 || copies[0].uri != "/h2/0" || copies[1].uri != "/h2/1" || copies[1].body != "payload" ||
		copies[1].host != "svc" || copies[1].header.Get("X-Dev") != "alice" {
		t.Fatalf("copies = %+v", copies)
	}
}

// A handler that never reads, or that cannot be dialed, must not slow the app down; what does
// not fit in the queue is dropped.
func TestWiretapStuckHandler(t *testing.T) {
	release := make(chan struct{})
	stuck := startRawServer(t, func(c *net.TCPConn) { <-release })
	t.Cleanup(func() { close(release) }) // runs before the server's cleanup
	for _, tt := range []struct {
		name string
		dial Dialer
	}{
		{"never reads", tcpDialer(stuck.addr)},
		{"dial blocks", blockingDialer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			app := httptest.NewServer(&recorder{name: "app"})
			defer app.Close()
			var stats Stats
			tap := NewTap(TapConfig{Dial: tt.dial, Queue: 2, Body: 1 << 20, Stats: &stats, Log: testLog(t)})
			r := startRouter(t, Config{
				App:    tcpDialer(app.Listener.Addr().String()),
				Routes: []Route{{Name: "tap", Match: mustCompile(t, Filter{}), Tap: tap}},
				Stats:  &stats,
			})
			c := r.dial(t)
			br := bufio.NewReader(c)
			// Large bodies, so that a handler that never reads fills the socket buffers.
			body := strings.Repeat("x", 512<<10)
			start := time.Now()
			const n = 20
			for i := range n {
				go io.WriteString(c, fmt.Sprintf("POST /%d HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s", i, len(body), body))
				if _, got := readResponse(t, br, "POST"); got != fmt.Sprintf("app /%d", i) {
					t.Fatalf("response %d = %q", i, got)
				}
			}
			// The delivery timeout is 10s: an app path that waited on the Tap would take that long.
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%d requests took %v", n, d)
			}
			eventually(t, "drops", func() bool { return stats.Dropped.Load() >= n-3 })
			closed := make(chan struct{})
			go func() {
				tap.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Tap.Close hangs")
			}
			tap.Close() // idempotent
			if stats.Copied.Load() != 0 || stats.Dropped.Load() != n {
				t.Errorf("Copied, Dropped = %d, %d; want 0, %d", stats.Copied.Load(), stats.Dropped.Load(), n)
			}
		})
	}
}

func TestTapRedialsAfterHandlerCloses(t *testing.T) {
	// A handler that answers one copy per connection and closes it without saying so.
	got := make(chan string, 10)
	handler := startRawServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		got <- req.URL.Path + " " + string(body)
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	var stats Stats
	tap := newTestTap(t, TapConfig{Dial: tcpDialer(handler.addr), Stats: &stats})
	for i := range 3 {
		cp := &tapCopy{method: "PUT", target: fmt.Sprintf("/%d", i), fields: []field{{"Host", "svc"}}, max: 100}
		cp.Write([]byte("body"))
		cp.offer([]*Tap{tap})
		select {
		case g := <-got:
			if g != fmt.Sprintf("/%d body", i) {
				t.Fatalf("handler got %q", g)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("copy not delivered")
		}
		eventually(t, "the copy to count", func() bool { return stats.Copied.Load() == uint64(i+1) })
	}
	if stats.Dropped.Load() != 0 {
		t.Errorf("Dropped = %d; want 0", stats.Dropped.Load())
	}
}
