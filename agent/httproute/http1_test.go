package httproute

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// readResponse reads one response for method from br, with its whole body.
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	resp.Body.Close()
	return resp, string(body)
}

// expectEOF checks that the router closed the client connection.
func expectEOF(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read after the last response = %q, %v; want EOF", b, err)
	}
}

func TestHTTP1KeepAliveRoutesByHeader(t *testing.T) {
	app, alice, bob := &recorder{name: "app"}, &recorder{name: "alice"}, &recorder{name: "bob"}
	appSrv, aliceSrv, bobSrv := httptest.NewServer(app), httptest.NewServer(alice), httptest.NewServer(bob)
	defer appSrv.Close()
	defer aliceSrv.Close()
	defer bobSrv.Close()
	var stats Stats
	r := startRouter(t, Config{
		App: tcpDialer(appSrv.Listener.Addr().String()),
		Routes: []Route{
			{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(aliceSrv.Listener.Addr().String())},
			{Name: "bob", Match: devHeader("bob"), Dial: tcpDialer(bobSrv.Listener.Addr().String())},
		},
		Stats: &stats,
	})
	c := r.dial(t)
	br := bufio.NewReader(c)

	type step struct{ path, dev, want string }
	steps := []step{
		{"/1", "", "app /1"},
		{"/2", "alice", "alice /2"},
		{"/3", "bob", "bob /3"},
		{"/4", "alice", "alice /4"},
		{"/5", "carol", "app /5"},
		{"/6", "bob", "bob /6"},
	}
	// The first three go one at a time, the rest pipelined: the router must answer in order.
	send := func(s step) {
		req := "GET " + s.path + " HTTP/1.1\r\nHost: svc\r\n"
		if s.dev != "" {
			req += "X-Dev: " + s.dev + "\r\n"
		}
		if _, err := io.WriteString(c, req+"\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range steps[:3] {
		send(s)
		if _, body := readResponse(t, br, "GET"); body != s.want {
			t.Fatalf("response to %s = %q; want %q", s.path, body, s.want)
		}
	}
	for _, s := range steps[3:] {
		send(s)
	}
	for _, s := range steps[3:] {
		if _, body := readResponse(t, br, "GET"); body != s.want {
			t.Fatalf("pipelined response to %s = %q; want %q", s.path, body, s.want)
		}
	}

	for _, tt := range []struct {
		rec  *recorder
		want []string
	}{{app, []string{"/1", "/5"}}, {alice, []string{"/2", "/4"}}, {bob, []string{"/3", "/6"}}} {
		if got := tt.rec.uris(); !slices.Equal(got, tt.want) {
			t.Errorf("%s saw %v; want %v", tt.rec.name, got, tt.want)
		}
		// One upstream connection per destination, kept for the client connection.
		reqs := tt.rec.requests()
		if len(reqs) == 2 && reqs[0].remote != reqs[1].remote {
			t.Errorf("%s got its requests on two connections: %s, %s", tt.rec.name, reqs[0].remote, reqs[1].remote)
		}
	}
	if got := stats.Requests.Load(); got != 6 {
		t.Errorf("Requests = %d; want 6", got)
	}
	if got := stats.Intercepted.Load(); got != 4 {
		t.Errorf("Intercepted = %d; want 4", got)
	}
}

func TestHTTP1HeadIsVerbatim(t *testing.T) {
	heads := make(chan string, 1)
	app := startRawServer(t, func(c *net.TCPConn) {
		h, err := readRawHead(bufio.NewReader(c))
		if err != nil {
			return
		}
		heads <- h
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	r := startRouter(t, Config{App: tcpDialer(app.addr)})
	c := r.dial(t)
	// Odd case, spacing, order and a repeated field: the app must get exactly these bytes.
	const head = "GET /a%2Fb?q=1;x HTTP/1.1\r\nhost: svc\r\nx-Weird-CASE:   v1  \r\nAccept: */*\r\nx-weird-case: v2\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
	io.WriteString(c, head)
	if _, body := readResponse(t, bufio.NewReader(c), "GET"); body != "ok" {
		t.Fatalf("body = %q", body)
	}
	if got := <-heads; got != head {
		t.Fatalf("app got head\n%q\nwant\n%q", got, head)
	}
}

func TestHTTP1Chunked(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Client-Sum"))
		// Several flushed writes: a chunked response.
		for _, part := range bytes.SplitAfter(body, []byte(" ")) {
			w.Write(part)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", strconv.Itoa(len(body)))
	})
	srv := httptest.NewServer(app)
	defer srv.Close()
	r := startRouter(t, Config{App: tcpDialer(srv.Listener.Addr().String())})
	c := r.dial(t)
	br := bufio.NewReader(c)
	for range 2 { // twice: the framing must leave the connection in step
		io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTrailer: X-Client-Sum\r\n\r\n"+
			"6;ext=1\r\nhello \r\n"+
			"b\r\nchunked wor\r\n"+
			"2\r\nld\r\n"+
			"0\r\nX-Client-Sum: 19\r\n\r\n")
		resp, body := readResponse(t, br, "POST")
		if body != "hello chunked world" {
			t.Fatalf("body = %q", body)
		}
		if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
			t.Errorf("response Transfer-Encoding = %v; want chunked", resp.TransferEncoding)
		}
		if got := resp.Trailer.Get("X-Sum"); got != "19" {
			t.Errorf("response trailer X-Sum = %q; want 19", got)
		}
		if got := resp.Header.Get("X-Req-Trailer"); got != "19" {
			t.Errorf("app saw request trailer %q; want 19", got)
		}
	}
}

func TestHTTP1LargeBodies(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Sha", fmt.Sprintf("%x", h.Sum(nil)))
		w.Header().Set("X-Len", strconv.FormatInt(n, 10))
		// The answer is a large Content-Length body too.
		w.Header().Set("Content-Length", strconv.Itoa(3<<20))
		io.CopyN(w, bytes.NewReader(bytes.Repeat([]byte("0123456789abcdef"), 3<<16)), 3<<20)
	})
	srv := httptest.NewServer(app)
	defer srv.Close()
	r := startRouter(t, Config{App: tcpDialer(srv.Listener.Addr().String())})
	c := r.dial(t)
	br := bufio.NewReader(c)
	body := make([]byte, 1<<20+17)
	rand.Read(body)
	want := fmt.Sprintf("%x", sha256.Sum256(body))
	for range 2 {
		go func() {
			io.WriteString(c, "PUT /big HTTP/1.1\r\nHost: svc\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n")
			c.Write(body)
		}()
		resp, got := readResponse(t, br, "PUT")
		if resp.Header.Get("X-Sha") != want || resp.Header.Get("X-Len") != strconv.Itoa(len(body)) {
			t.Fatalf("app got %s bytes with sha %s; want %d, %s", resp.Header.Get("X-Len"), resp.Header.Get("X-Sha"), len(body), want)
		}
		if got != strings.Repeat("0123456789abcdef", 3<<16) {
			t.Fatalf("response body of %d bytes differs", len(got))
		}
	}
}

func TestHTTP1Interim(t *testing.T) {
	app := startRawServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			if _, err := readRawHead(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
		}
	})
	r := startRouter(t, Config{App: tcpDialer(app.addr)})
	c := r.dial(t)
	br := bufio.NewReader(c)
	for range 2 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		interim, err := readRawHead(br)
		if err != nil || interim != "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" {
			t.Fatalf("interim response = %q, %v", interim, err)
		}
		if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "final" {
			t.Fatalf("final response = %d %q", resp.StatusCode, body)
		}
	}
}

func TestHTTP1ExpectContinue(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // reading sends the 100 Continue
		io.WriteString(w, "got "+string(body))
	}))
	defer srv.Close()
	r := startRouter(t, Config{App: tcpDialer(srv.Listener.Addr().String())})
	c := r.dial(t)
	br := bufio.NewReader(c)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	// The body is sent only after the 100 comes through the router.
	if h, err := readRawHead(br); err != nil || !strings.HasPrefix(h, "HTTP/1.1 100 Continue\r\n") {
		t.Fatalf("interim response = %q, %v", h, err)
	}
	io.WriteString(c, "data")
	if _, body := readResponse(t, br, "POST"); body != "got data" {
		t.Fatalf("body = %q", body)
	}
}

func TestHTTP1HeadAndNoBodyStatuses(t *testing.T) {
	app := startRawServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			h, err := readRawHead(br)
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(h, "HEAD "):
				// A length but no body: HEAD responses never have one.
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			case strings.HasPrefix(h, "GET /204"):
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			case strings.HasPrefix(h, "GET /304"):
				io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast")
			}
		}
	})
	r := startRouter(t, Config{App: tcpDialer(app.addr)})
	c := r.dial(t)
	br := bufio.NewReader(c)
	for _, req := range []struct{ method, path string }{{"HEAD", "/"}, {"GET", "/204"}, {"GET", "/304"}} {
		io.WriteString(c, req.method+" "+req.path+" HTTP/1.1\r\nHost: svc\r\n\r\n")
		if _, body := readResponse(t, br, req.method); body != "" {
			t.Fatalf("%s %s: body %q", req.method, req.path, body)
		}
	}
	io.WriteString(c, "GET /last HTTP/1.1\r\nHost: svc\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "last" {
		t.Fatalf("body after bodiless responses = %q; want last", body)
	}
}

func TestHTTP1ResponseUntilClose(t *testing.T) {
	app := startRawServer(t, func(c *net.TCPConn) {
		readRawHead(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length, ")
		io.WriteString(c, "ends with the connection")
	})
	r := startRouter(t, Config{App: tcpDialer(app.addr)})
	c := r.dial(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length, ends with the connection"
	if string(all) != want {
		t.Fatalf("client got %q; want %q", all, want)
	}
}

func TestHTTP1ConnectionClose(t *testing.T) {
	srv := httptest.NewServer(&recorder{name: "app"})
	defer srv.Close()
	r := startRouter(t, Config{App: tcpDialer(srv.Listener.Addr().String())})

	t.Run("request", func(t *testing.T) {
		c := r.dial(t)
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: svc\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != "app /1" {
			t.Fatalf("body = %q", body)
		}
		expectEOF(t, br)
	})
	t.Run("HTTP/1.0", func(t *testing.T) {
		c := r.dial(t)
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /10 HTTP/1.0\r\nHost: svc\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != "app /10" {
			t.Fatalf("body = %q", body)
		}
		expectEOF(t, br)
	})
	t.Run("response", func(t *testing.T) {
		app := startRawServer(t, func(c *net.TCPConn) {
			readRawHead(bufio.NewReader(c))
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye")
			// Stay open: the router must end the exchange by the header, not by EOF.
			io.Copy(io.Discard, c)
		})
		r := startRouter(t, Config{App: tcpDialer(app.addr)})
		c := r.dial(t)
		br := bufio.NewReader(c)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != "bye" {
			t.Fatalf("body = %q", body)
		}
		expectEOF(t, br)
	})
}

func TestHTTP1Upgrade(t *testing.T) {
	// A websocket-like server: after 101 it answers every byte upper-cased.
	upgrader := func(name string) *rawServer {
		return startRawServer(t, func(c *net.TCPConn) {
			br := bufio.NewReader(c)
			h, err := readRawHead(br)
			if err != nil || !strings.Contains(h, "Upgrade: websocket\r\n") {
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
				return
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Name: "+name+"\r\n\r\n")
			buf := make([]byte, 1024)
			for {
				n, err := br.Read(buf)
				if n > 0 {
					c.Write(bytes.ToUpper(buf[:n]))
				}
				if err != nil {
					c.CloseWrite()
					return
				}
			}
		})
	}
	app, alice := upgrader("app"), upgrader("alice")
	r := startRouter(t, Config{
		App:    tcpDialer(app.addr),
		Routes: []Route{{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(alice.addr)}},
	})
	c := r.dial(t)
	br := bufio.NewReader(c)
	// Raw bytes right behind the head, before the 101 is back, must reach the server.
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly ")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("X-Name") != "alice" {
		t.Fatalf("upgrade response = %v, %v", resp, err)
	}
	io.WriteString(c, "hello websocket")
	c.CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "EARLY HELLO WEBSOCKET" {
		t.Fatalf("after the upgrade got %q, %v", rest, err)
	}
	if app.accepted() != 0 {
		t.Errorf("the app got %d connections; want none", app.accepted())
	}
}

func TestHTTP1DialFailure(t *testing.T) {
	srv := httptest.NewServer(&recorder{name: "app"})
	defer srv.Close()
	r := startRouter(t, Config{
		App:    tcpDialer(srv.Listener.Addr().String()),
		Routes: []Route{{Name: "alice-1234", Match: devHeader("alice"), Dial: failingDialer}},
	})
	c := r.dial(t)
	br := bufio.NewReader(c)
	// The failed request has a body: the router must skip it to find the next request.
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\nContent-Length: 5\r\n\r\nhello")
	resp, body := readResponse(t, br, "POST")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "intercept alice-1234") {
		t.Fatalf("response = %d %q; want 502 naming the intercept", resp.StatusCode, body)
	}
	io.WriteString(c, "GET /y HTTP/1.1\r\nHost: svc\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "app /y" {
		t.Fatalf("next request got %q; want app /y", body)
	}

	// A client that waits for 100 Continue before its body gets the 502 at once.
	c = r.dial(t)
	br = bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /z HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	if resp, _ := readResponse(t, br, "POST"); resp.StatusCode != http.StatusBadGateway || !resp.Close {
		t.Fatalf("with Expect: 100-continue: %d (close %v); want 502 and the connection closed", resp.StatusCode, resp.Close)
	}
}

func TestHTTP1HeadTooLarge(t *testing.T) {
	srv := httptest.NewServer(&recorder{name: "app"})
	defer srv.Close()
	r := startRouter(t, Config{App: tcpDialer(srv.Listener.Addr().String())})
	c := r.dial(t)
	br := bufio.NewReader(c)
	go func() {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\nX-Big: "+strings.Repeat("a", 70<<10)+"\r\n\r\n")
	}()
	resp, _ := readResponse(t, br, "GET")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status = %d; want 431", resp.StatusCode)
	}
	expectEOF(t, br)
}

func TestHTTP1StaleKeptConnection(t *testing.T) {
	// The app closes every connection after one answer without saying so, as servers with a
	// short idle timeout do: the next request must be repeated on a new connection.
	app := startRawServer(t, func(c *net.TCPConn) {
		h, err := readRawHead(bufio.NewReader(c))
		if err != nil {
			return
		}
		path := strings.Fields(h)[1]
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(path))+"\r\n\r\n"+path)
	})
	r := startRouter(t, Config{App: tcpDialer(app.addr)})
	c := r.dial(t)
	br := bufio.NewReader(c)
	for _, p := range []string{"/1", "/2", "/3"} {
		io.WriteString(c, "GET "+p+" HTTP/1.1\r\nHost: svc\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != p {
			t.Fatalf("body = %q; want %q", body, p)
		}
	}
}

func TestServeEndsWithContext(t *testing.T) {
	upstreamClosed := make(chan struct{})
	app := startRawServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		readRawHead(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
		close(upstreamClosed)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, server.(*net.TCPConn), Config{App: tcpDialer(app.addr), Log: testLog(t)}) }()
	br := bufio.NewReader(client)
	io.WriteString(client, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	readResponse(t, br, "GET")
	cancel() // the client keeps its connection idle: only ctx can end Serve
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("Serve = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after ctx ended")
	}
	client.SetDeadline(time.Now().Add(10 * time.Second))
	expectEOF(t, br)
	select {
	case <-upstreamClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream connection was not closed")
	}
}

func TestHTTP1AmbiguousFramingRejected(t *testing.T) {
	app := &recorder{name: "app"}
	srv := httptest.NewServer(app)
	defer srv.Close()
	r := startRouter(t, Config{App: tcpDialer(srv.Listener.Addr().String())})
	c := r.dial(t)
	br := bufio.NewReader(c)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	if resp, _ := readResponse(t, br, "POST"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status = %d; want 400", resp.StatusCode)
	}
	expectEOF(t, br)
	if len(app.requests()) != 0 {
		t.Errorf("the app got %v", app.uris())
	}
}

func TestHTTP1LargeChunks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Echo the body back chunked, in the pieces it arrives in: the response streams while
		// the request still does.
		http.NewResponseController(w).EnableFullDuplex()
		io.Copy(w, r.Body)
	}))
	defer srv.Close()
	r := startRouter(t, Config{App: tcpDialer(srv.Listener.Addr().String())})
	c := r.dial(t)
	big := make([]byte, 1<<20)
	rand.Read(big)
	go func() {
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", len(big))
		c.Write(big)
		io.WriteString(c, "\r\n3\r\nend\r\n0\r\n\r\n")
	}()
	resp, body := readResponse(t, bufio.NewReader(c), "POST")
	if resp.StatusCode != 200 || body != string(big)+"end" {
		t.Fatalf("status %d, body of %d bytes; want the %d bytes sent", resp.StatusCode, len(body), len(big)+3)
	}
}

// eofConn tells when a read of its connection saw the peer close.
type eofConn struct {
	*net.TCPConn
	eof  chan struct{}
	once sync.Once
}

func (c *eofConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if err == io.EOF {
		c.once.Do(func() { close(c.eof) })
	}
	return n, err
}

func TestHTTP1KeptConnectionClosedWhileIdle(t *testing.T) {
	// One answer per connection, then close, as an app with a short keep-alive timeout does.
	app := startRawServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		msg := req.Method + " " + string(body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(msg))+"\r\n\r\n"+msg)
	})
	conns := make(chan *eofConn, 10)
	dial := func(ctx context.Context) (Conn, error) {
		c, err := tcpDialer(app.addr)(ctx)
		if err != nil {
			return nil, err
		}
		ec := &eofConn{TCPConn: c.(*net.TCPConn), eof: make(chan struct{})}
		conns <- ec
		return ec, nil
	}
	r := startRouter(t, Config{App: dial})
	c := r.dial(t)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "GET " {
		t.Fatalf("body = %q", body)
	}
	select {
	case <-(<-conns).eof: // the router noticed the close while idle
	case <-time.After(10 * time.Second):
		t.Fatal("the router did not read the close of the idle upstream")
	}
	// A POST with a body cannot be repeated: it must go on a new connection from the start.
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n\r\ndata")
	if resp, body := readResponse(t, br, "POST"); resp.StatusCode != 200 || body != "POST data" {
		t.Fatalf("response = %d %q", resp.StatusCode, body)
	}
	if app.accepted() != 2 {
		t.Errorf("the app got %d connections; want 2", app.accepted())
	}
}

// With Live, one keep-alive connection follows the intercepts as they change: a request is routed
// by the routes of its own time, not of its connection's.
func TestHTTP1LiveRoutes(t *testing.T) {
	app, alice := &recorder{name: "app"}, &recorder{name: "alice"}
	appSrv, aliceSrv := httptest.NewServer(app), httptest.NewServer(alice)
	defer appSrv.Close()
	defer aliceSrv.Close()
	var routes atomic.Pointer[[]Route]
	routes.Store(&[]Route{})
	r := startRouter(t, Config{Live: func() Routing {
		return Routing{App: tcpDialer(appSrv.Listener.Addr().String()), Routes: *routes.Load()}
	}})
	c := r.dial(t)
	br := bufio.NewReader(c)
	get := func(path string) string {
		t.Helper()
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_, body := readResponse(t, br, "GET")
		return body
	}
	if got := get("/before"); got != "app /before" {
		t.Errorf("before the intercept: %q", got)
	}
	routes.Store(&[]Route{{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(aliceSrv.Listener.Addr().String())}})
	if got := get("/during"); got != "alice /during" {
		t.Errorf("during the intercept: %q", got)
	}
	routes.Store(&[]Route{})
	if got := get("/after"); got != "app /after" {
		t.Errorf("after the intercept: %q", got)
	}
}
