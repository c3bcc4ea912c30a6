package forward_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"teledock.dev/teledock/agent/forward"
)

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkGoroutines fails the test when goroutines started during it are still running at its
// end. Call it first, so that its cleanup runs after everyone else's.
func checkGoroutines(tb testing.TB) {
	tb.Helper()
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			tb.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
		}
	})
}

func port(tb testing.TB, a net.Addr) uint16 {
	tb.Helper()
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		tb.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// serveTCP runs handle for every connection to a loopback listener until the test ends.
func serveTCP(tb testing.TB, handle func(*net.TCPConn)) uint16 {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return port(tb, l.Addr())
}

// replyAfterEOF is an app that reads the whole request, then answers "echo:" and the request,
// then closes: it only works when the half-close reaches it.
func replyAfterEOF(c *net.TCPConn) {
	req, err := io.ReadAll(c)
	if err != nil {
		return
	}
	_, _ = c.Write(append([]byte("echo:"), req...))
}

// streamEcho copies the request back as it comes and half-closes when the request ends.
func streamEcho(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

func start(tb testing.TB, cfg forward.Config) *forward.Forwarder {
	tb.Helper()
	f, err := forward.New(testLogger(tb), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

func tcpTarget(appPort uint16) forward.Target {
	return forward.Target{Name: "http", Network: "tcp", Listen: "127.0.0.1:0", AppPort: appPort}
}

func dialTCP(tb testing.TB, f *forward.Forwarder, i int) *net.TCPConn {
	tb.Helper()
	c, err := net.Dial("tcp", f.Addrs()[i].String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestTCP(t *testing.T) {
	big := make([]byte, 8<<20)
	_, _ = rand.Read(big)
	for _, tc := range []struct {
		name string
		app  func(*net.TCPConn)
		req  []byte
		want []byte
	}{
		{"half-close reaches the app", replyAfterEOF, []byte("hello"), []byte("echo:hello")},
		{"empty request", replyAfterEOF, nil, []byte("echo:")},
		{"8 MiB both ways at once", streamEcho, big, big},
		{"app answers first and closes", func(c *net.TCPConn) { _, _ = io.WriteString(c, "bye") }, nil, []byte("bye")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			f := start(t, forward.Config{Targets: []forward.Target{tcpTarget(serveTCP(t, tc.app))}})
			c := dialTCP(t, f, 0)
			wrote := make(chan error, 1)
			go func() {
				_, err := c.Write(tc.req)
				if err == nil {
					err = c.CloseWrite()
				}
				wrote <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-wrote; err != nil && tc.req != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got %d bytes %.20q, want %d bytes %.20q", len(got), got, len(tc.want), tc.want)
			}
		})
	}
}

func TestTCPDialFailureResets(t *testing.T) {
	checkGoroutines(t)
	// A port nobody listens on: bind one, and close it again.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := port(t, l.Addr())
	l.Close()

	f := start(t, forward.Config{Targets: []forward.Target{tcpTarget(closed)}})
	// On loopback the reset can beat the end of the client's own connect.
	c, err := net.Dial("tcp", f.Addrs()[0].String())
	if err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var n int
		n, err = c.Read(make([]byte, 1))
		var nerr net.Error
		if n != 0 || err == nil || (errors.As(err, &nerr) && nerr.Timeout()) {
			t.Fatalf("read = %d, %v; want a reset", n, err)
		}
	}
	if !strings.Contains(err.Error(), "reset") {
		t.Errorf("error %v, want a connection reset", err)
	}
	if s := f.Stats(); s.DialErrors != 1 {
		t.Errorf("stats %+v, want one dial error", s)
	}
}

// The router decides per flow: a connection that is already joined stays with the destination
// it got when the decision changes.
func TestRouter(t *testing.T) {
	checkGoroutines(t)
	greeter := func(s string) func(*net.TCPConn) {
		return func(c *net.TCPConn) {
			_, _ = io.WriteString(c, s)
			_, _ = io.Copy(io.Discard, c)
		}
	}
	appPort := serveTCP(t, greeter("app"))
	interceptPort := serveTCP(t, greeter("laptop"))

	var intercepted atomic.Bool
	var mu sync.Mutex // guards sources
	var sources []netip.AddrPort
	app := forward.App("127.0.0.1")
	tunnel := forward.Destination{Name: "intercept", Dial: func(ctx context.Context, network string, target forward.Target) (forward.Conn, error) {
		return forward.App("127.0.0.1").Dial(ctx, network, forward.Target{AppPort: interceptPort})
	}}
	f := start(t, forward.Config{
		Targets: []forward.Target{tcpTarget(appPort)},
		Router: func(fl forward.Flow) forward.Destination {
			mu.Lock()
			sources = append(sources, fl.Source)
			mu.Unlock()
			if fl.Target.Name != "http" {
				t.Errorf("flow target %+v", fl.Target)
			}
			if intercepted.Load() {
				return tunnel
			}
			return app
		},
	})
	greeting := func(c net.Conn) string {
		b := make([]byte, 16)
		n, err := io.ReadAtLeast(c, b, 3)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[:n])
	}

	before := dialTCP(t, f, 0)
	if got := greeting(before); got != "app" {
		t.Fatalf("before the intercept: %q", got)
	}
	intercepted.Store(true)
	during := dialTCP(t, f, 0)
	if got := greeting(during); got != "laptop" {
		t.Errorf("during the intercept: %q", got)
	}
	// The first connection still talks to the app.
	if _, err := io.WriteString(before, "still here"); err != nil {
		t.Errorf("old connection: %v", err)
	}
	if s := f.Stats(); s.Conns != 2 {
		t.Errorf("stats %+v, want 2 connections", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sources) != 2 || sources[0] != before.LocalAddr().(*net.TCPAddr).AddrPort() {
		t.Errorf("flow sources %v, want the clients' addresses (first %v)", sources, before.LocalAddr())
	}
}

// udpEcho answers each datagram with "echo:" and the datagram, and counts the peers it saw.
func udpEcho(tb testing.TB) (uint16, *atomic.Int32) {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { pc.Close(); <-done })
	var peers atomic.Int32
	go func() {
		defer close(done)
		seen := make(map[string]bool)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if !seen[from.String()] {
				seen[from.String()] = true
				peers.Add(1)
			}
			_, _ = pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return port(tb, pc.LocalAddr()), &peers
}

func udpExchange(tb testing.TB, c net.Conn, msg string) string {
	tb.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 65536)
	n, err := c.Read(b)
	if err != nil {
		tb.Fatalf("read reply to %q: %v", msg, err)
	}
	return string(b[:n])
}

func udpTarget(appPort uint16) forward.Target {
	return forward.Target{Name: "dns", Network: "udp", Listen: "127.0.0.1:0", AppPort: appPort}
}

func TestUDP(t *testing.T) {
	checkGoroutines(t)
	appPort, peers := udpEcho(t)
	f := start(t, forward.Config{Targets: []forward.Target{udpTarget(appPort)}})
	var clients []net.Conn
	for range 2 {
		c, err := net.Dial("udp", f.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	for round := range 3 {
		for i, c := range clients {
			msg := "client" + strconv.Itoa(i) + "-" + strconv.Itoa(round)
			if got := udpExchange(t, c, msg); got != "echo:"+msg {
				t.Errorf("reply %q to %q", got, msg)
			}
		}
	}
	if got := udpExchange(t, clients[0], strings.Repeat("x", 60000)); len(got) != 60005 {
		t.Errorf("large datagram came back with %d bytes", len(got))
	}
	if s := f.Stats(); s.Flows != 2 || s.UDPDrops != 0 {
		t.Errorf("stats %+v, want 2 flows and no drops", s)
	}
	if n := peers.Load(); n != 2 {
		t.Errorf("app saw %d peers, want one per client flow", n)
	}
}

func TestUDPIdleTimeout(t *testing.T) {
	checkGoroutines(t)
	appPort, _ := udpEcho(t)
	var dials atomic.Int32
	app := forward.App("127.0.0.1")
	f := start(t, forward.Config{
		Targets:        []forward.Target{udpTarget(appPort)},
		UDPIdleTimeout: 100 * time.Millisecond,
		Router: func(forward.Flow) forward.Destination {
			dials.Add(1)
			return app
		},
	})
	c, err := net.Dial("udp", f.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Activity keeps the flow: three exchanges 60 ms apart outlast the timeout together.
	for i := range 3 {
		if got := udpExchange(t, c, "a"); got != "echo:a" {
			t.Fatalf("exchange %d: %q", i, got)
		}
		time.Sleep(60 * time.Millisecond)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials while active, want 1", n)
	}
	deadline := time.Now().Add(3 * time.Second)
	for f.Stats().Flows != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := f.Stats(); s.Flows != 0 {
		t.Fatalf("idle flow still open: %+v", s)
	}
	if got := udpExchange(t, c, "b"); got != "echo:b" {
		t.Errorf("after the idle timeout: %q", got)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("%d dials, want a second one after the timeout", n)
	}
}

func TestClose(t *testing.T) {
	checkGoroutines(t)
	tcpApp := serveTCP(t, streamEcho)
	udpApp, _ := udpEcho(t)
	f, err := forward.New(testLogger(t), forward.Config{Targets: []forward.Target{tcpTarget(tcpApp), udpTarget(udpApp)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	tc := dialTCP(t, f, 0)
	if _, err := io.WriteString(tc, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(tc, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	uc, err := net.Dial("udp", f.Addrs()[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	udpExchange(t, uc, "x")

	closed := make(chan error)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Error("TCP connection still open after Close")
	}
	if _, err := net.Dial("tcp", f.Addrs()[0].String()); err == nil {
		t.Error("still listening after Close")
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := f.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestStartUndoesListenersOnFailure(t *testing.T) {
	checkGoroutines(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// A free port for the first target: bind, note it and release it.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	f, err := forward.New(testLogger(t), forward.Config{Targets: []forward.Target{
		{Name: "first", Network: "tcp", Listen: freeAddr, AppPort: 1},
		{Name: "second", Network: "tcp", Listen: taken.Addr().String(), AppPort: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = f.Start()
	if err == nil || !strings.Contains(err.Error(), "forward: target second: listen tcp") {
		t.Fatalf("Start = %v, want an error naming the second target", err)
	}
	l, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("first target's port still held: %v", err)
	}
	l.Close()
	f.Close()
}

func TestNewErrors(t *testing.T) {
	log := testLogger(t)
	for _, tc := range []struct {
		name    string
		log     *slog.Logger
		cfg     forward.Config
		wantErr string
	}{
		{"nil logger", nil, forward.Config{Targets: []forward.Target{tcpTarget(1)}}, "forward: nil logger"},
		{"no targets", log, forward.Config{}, "forward: no targets"},
		{"sctp", log, forward.Config{Targets: []forward.Target{{Name: "x", Network: "sctp", Listen: ":1"}}},
			`forward: target x: network "sctp", want tcp or udp`},
		{"no listen", log, forward.Config{Targets: []forward.Target{{Name: "x", Network: "tcp"}}}, "forward: target x: no listen address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := forward.New(tc.log, tc.cfg)
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("New = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestServe: a Destination with Serve gets the accepted connection instead of a dial and a join;
// the client's connection is closed when Serve returns, and Close ends a Serve that is still
// reading (its ctx ends and its connection closes).
func TestServe(t *testing.T) {
	checkGoroutines(t)
	served := make(chan error, 2)
	f, err := forward.New(testLogger(t), forward.Config{
		Targets: []forward.Target{tcpTarget(1)},
		Router: func(forward.Flow) forward.Destination {
			return forward.Destination{Name: "router", Serve: func(ctx context.Context, c forward.Conn) error {
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					served <- err
					return err
				}
				if line == "wait\n" {
					<-ctx.Done() // until Close
					served <- ctx.Err()
					return ctx.Err()
				}
				_, err = io.WriteString(c, "served "+line)
				served <- err
				return err
			}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, f, 0)
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c) // EOF: the Forwarder closed the connection after Serve
	if err != nil || string(got) != "served hello\n" {
		t.Errorf("answer %q %v", got, err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}

	waiting := dialTCP(t, f, 0)
	if _, err := io.WriteString(waiting, "wait\n"); err != nil {
		t.Fatal(err)
	}
	waitForConns(t, f, 1)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, context.Canceled) {
		t.Errorf("Serve after Close: %v, want its ctx canceled", err)
	}
	_ = waiting.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := waiting.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("served connection after Close: %v, want it closed", err)
	}
}

func waitForConns(tb testing.TB, f *forward.Forwarder, n int) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.Stats().Conns != n {
		if time.Now().After(deadline) {
			tb.Fatalf("connections %d, want %d", f.Stats().Conns, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
