package httproute

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// startH2CServer serves h with HTTP/2 prior knowledge on loopback until the end of the test.
func startH2CServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: h2cProtocols()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// h2cClient is an HTTP client that speaks HTTP/2 with prior knowledge.
func h2cClient(t *testing.T) *http.Client {
	tr := &http.Transport{Protocols: h2cProtocols()}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestH2CRoutesStreams(t *testing.T) {
	app, alice, bob := &recorder{name: "app"}, &recorder{name: "alice"}, &recorder{name: "bob"}
	var stats Stats
	r := startRouter(t, Config{
		App: tcpDialer(startH2CServer(t, app)),
		Routes: []Route{
			{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(startH2CServer(t, alice))},
			{Name: "bob", Match: devHeader("bob"), Dial: tcpDialer(startH2CServer(t, bob))},
		},
		Stats: &stats,
	})
	client := h2cClient(t)
	devs := []string{"", "alice", "bob"}
	const n = 30
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := devs[i%3]
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/r/%d?q=a;b", r.addr, i), nil)
			req.Host = "svc.example"
			req.Header.Set("X-Forwarded-For", "10.1.2.3")
			if dev != "" {
				req.Header.Set("X-Dev", dev)
			}
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			want := "app"
			if dev != "" {
				want = dev
			}
			if string(body) != fmt.Sprintf("%s /r/%d", want, i) || resp.ProtoMajor != 2 {
				errs <- fmt.Errorf("request %d (x-dev %q) got %s %q", i, dev, resp.Proto, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, rec := range []*recorder{app, alice, bob} {
		var want []string
		for j := i; j < n; j += 3 {
			want = append(want, fmt.Sprintf("/r/%d?q=a;b", j))
		}
		got := rec.uris()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s saw %v; want %v", rec.name, got, want)
		}
		for _, req := range rec.requests() {
			if req.host != "svc.example" || req.proto != "HTTP/2.0" || !slices.Equal(req.header["X-Forwarded-For"], []string{"10.1.2.3"}) ||
				req.header.Get("X-Forwarded-Host") != "" || req.header.Get("X-Forwarded-Proto") != "" {
				t.Errorf("%s got a changed request: host %q, %s, header %v", rec.name, req.host, req.proto, req.header)
				break
			}
		}
	}
	if stats.Requests.Load() != n || stats.Intercepted.Load() != 2*n/3 {
		t.Errorf("Requests, Intercepted = %d, %d; want %d, %d", stats.Requests.Load(), stats.Intercepted.Load(), n, 2*n/3)
	}
}

func TestH2CStreamingWithTrailers(t *testing.T) {
	// A bidirectional stream: every message is answered at once, upper-cased, and the
	// response ends with trailers, as gRPC does.
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Count")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 1024)
		count := 0
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				count++
				w.Write([]byte(strings.ToUpper(string(buf[:n]))))
				w.(http.Flusher).Flush()
			}
			if err != nil {
				break
			}
		}
		w.Header().Set("X-Count", fmt.Sprint(count))
		w.Header().Set(http.TrailerPrefix+"X-Late", "late") // not announced
	})
	r := startRouter(t, Config{
		App:    tcpDialer(startH2CServer(t, http.NotFoundHandler())),
		Routes: []Route{{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(startH2CServer(t, echo))}},
	})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+r.addr+"/stream", pr)
	req.Header.Set("X-Dev", "alice")
	resp, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 1024)
	for _, msg := range []string{"ping one", "ping two", "ping three"} {
		if _, err := io.WriteString(pw, msg); err != nil {
			t.Fatal(err)
		}
		// The answer must come before the request ends: nothing may buffer the stream.
		n, err := io.ReadAtLeast(resp.Body, buf, len(msg))
		if err != nil || string(buf[:n]) != strings.ToUpper(msg) {
			t.Fatalf("answer to %q = %q, %v", msg, buf[:n], err)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("end of stream: %q, %v", rest, err)
	}
	if resp.Trailer.Get("X-Count") != "3" || resp.Trailer.Get("X-Late") != "late" {
		t.Fatalf("trailers = %v; want X-Count 3 and X-Late", resp.Trailer)
	}
}

func startGRPCHealth(t *testing.T, status healthpb.HealthCheckResponse_ServingStatus) (*health.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("who", status)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return hs, ln.Addr().String()
}

func TestGRPC(t *testing.T) {
	_, appAddr := startGRPCHealth(t, healthpb.HealthCheckResponse_SERVING)
	alice, aliceAddr := startGRPCHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	var stats Stats
	r := startRouter(t, Config{
		App:    tcpDialer(appAddr),
		Routes: []Route{{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(aliceAddr)}},
		Stats:  &stats,
	})
	conn, err := grpc.NewClient("passthrough:///"+r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	aliceCtx := metadata.AppendToOutgoingContext(ctx, "x-dev", "alice")

	// Unary calls on one connection go where their metadata says.
	for range 2 {
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "who"})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("app Check = %v, %v", resp, err)
		}
		resp, err = client.Check(aliceCtx, &healthpb.HealthCheckRequest{Service: "who"})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("alice Check = %v, %v", resp, err)
		}
	}
	// Errors travel in trailers.
	if _, err := client.Check(aliceCtx, &healthpb.HealthCheckRequest{Service: "nobody"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("Check of an unknown service = %v; want NotFound", err)
	}
	// A server stream delivers each update as it happens.
	watch, err := client.Watch(aliceCtx, &healthpb.HealthCheckRequest{Service: "who"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("first Watch update = %v, %v", resp, err)
	}
	alice.SetServingStatus("who", healthpb.HealthCheckResponse_SERVING)
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("second Watch update = %v, %v", resp, err)
	}
	cancel()
	if stats.Intercepted.Load() != 4 {
		t.Errorf("Intercepted = %d; want 4", stats.Intercepted.Load())
	}
}

func TestH2CDialFailure(t *testing.T) {
	r := startRouter(t, Config{
		App:    tcpDialer(startH2CServer(t, &recorder{name: "app"})),
		Routes: []Route{{Name: "alice-1234", Match: devHeader("alice"), Dial: failingDialer}},
	})
	client := h2cClient(t)
	for _, dev := range []string{"alice", ""} {
		req, _ := http.NewRequest("GET", "http://"+r.addr+"/x", nil)
		req.Header.Set("X-Dev", dev)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case dev == "alice" && (resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "intercept alice-1234")):
			t.Errorf("intercepted request: %d %q; want 502 naming the intercept", resp.StatusCode, body)
		case dev == "" && string(body) != "app /x":
			t.Errorf("app request: %d %q", resp.StatusCode, body)
		}
	}
}

func TestH2CServeEndsWithContext(t *testing.T) {
	// The upstream sees its connection end when Serve does, even in the middle of a stream.
	streaming := make(chan struct{})
	backend := startH2CServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(streaming)
		<-r.Context().Done()
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		done <- Serve(ctx, c.(*net.TCPConn), Config{App: tcpDialer(backend), Log: testLog(t)})
	}()
	resp, err := h2cClient(t).Get("http://" + ln.Addr().String() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-streaming
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("Serve = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after ctx ended")
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("the client's stream ended cleanly; want an error")
	}
}

// A Host filter matches an h2c stream's :authority, as it matches an HTTP/1.1 Host line.
func TestH2CHostFilter(t *testing.T) {
	r := startRouter(t, Config{
		App:    tcpDialer(startH2CServer(t, &recorder{name: "app"})),
		Routes: []Route{{Name: "alice", Match: mustCompile(t, Filter{Headers: []HeaderMatch{{Name: "Host", Value: "alice\\.example"}}}), Dial: tcpDialer(startH2CServer(t, &recorder{name: "alice"}))}},
	})
	client := h2cClient(t)
	for host, want := range map[string]string{"alice.example": "alice /x", "bob.example": "app /x"} {
		req, _ := http.NewRequest("GET", "http://"+r.addr+"/x", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Errorf("host %s answered %q, want %q", host, body, want)
		}
	}
}

// With Live, the streams of one h2c connection follow the intercepts as they change.
func TestH2CLiveRoutes(t *testing.T) {
	appAddr := startH2CServer(t, &recorder{name: "app"})
	aliceAddr := startH2CServer(t, &recorder{name: "alice"})
	var routes atomic.Pointer[[]Route]
	routes.Store(&[]Route{})
	r := startRouter(t, Config{Live: func() Routing {
		return Routing{App: tcpDialer(appAddr), Routes: *routes.Load()}
	}})
	client := h2cClient(t)
	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+r.addr+path, nil)
		req.Header.Set("X-Dev", "alice")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := get("/before"); got != "app /before" {
		t.Errorf("before the intercept: %q", got)
	}
	routes.Store(&[]Route{{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(aliceAddr)}})
	if got := get("/during"); got != "alice /during" {
		t.Errorf("during the intercept: %q", got)
	}
	routes.Store(&[]Route{})
	if got := get("/after"); got != "app /after" {
		t.Errorf("after the intercept: %q", got)
	}
}
