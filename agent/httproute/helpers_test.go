package httproute

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// testLog shows the package's logs with -v only.
func testLog(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// tcpDialer dials addr over TCP; *net.TCPConn is a Conn.
func tcpDialer(addr string) Dialer {
	return func(ctx context.Context) (Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
}

// failingDialer never connects.
func failingDialer(ctx context.Context) (Conn, error) {
	return nil, errors.New("connection refused (test)")
}

// blockingDialer connects only when ctx ends, with an error.
func blockingDialer(ctx context.Context) (Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func mustCompile(t *testing.T, f Filter) *Matcher {
	t.Helper()
	m, err := f.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func devHeader(v string) *Matcher {
	m, err := Filter{Headers: []HeaderMatch{{Name: "x-dev", Value: v}}}.Compile()
	if err != nil {
		panic(err)
	}
	return m
}

// router serves every connection of a loopback listener with Serve.
type router struct {
	addr   string
	mu     sync.Mutex
	errs   []error
	cancel context.CancelFunc
	ln     net.Listener
	wg     sync.WaitGroup
}

// startRouter starts a router with cfg; it stops (and Serve must have returned) at the end of
// the test.
func startRouter(t *testing.T, cfg Config) *router {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testLog(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &router{addr: ln.Addr().String(), cancel: cancel, ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				err := Serve(ctx, c.(*net.TCPConn), cfg)
				r.mu.Lock()
				r.errs = append(r.errs, err)
				r.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *router) stop() {
	r.cancel()
	r.ln.Close()
	r.wg.Wait()
}

// dial connects a client to the router.
func (r *router) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

// served counts the connections whose Serve returned.
func (r *router) served() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawServer accepts connections on loopback and runs handle on each, in its own goroutine. It
// closes its listener and the connections, and waits for the handlers, at the end of the test.
type rawServer struct {
	addr  string
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	count int
}

func startRawServer(t *testing.T, handle func(c *net.TCPConn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String(), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.count++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// readRawHead reads one message head as bytes.
func readRawHead(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" || line == "\n" {
			return b.String(), nil
		}
	}
}

// recorder is an http.Handler that records what it serves and answers with its name.
type recorder struct {
	name string
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, uri, proto, host string
	header                   http.Header
	body                     string
	remote                   string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, recorded{r.Method, r.RequestURI, r.Proto, r.Host, r.Header.Clone(), string(body), r.RemoteAddr})
	rec.mu.Unlock()
	w.Header().Set("X-Served-By", rec.name)
	io.WriteString(w, rec.name+" "+r.URL.Path)
}

func (rec *recorder) requests() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.reqs...)
}

func (rec *recorder) uris() []string {
	var u []string
	for _, r := range rec.requests() {
		u = append(u, r.uri)
	}
	return u
}
