package podfs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"teledock.dev/teledock/agent/volumes"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/daemon"
	"teledock.dev/teledock/daemoncontainer/intercept"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "0123456789abcdef0123456789abcdef"

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// agentIntercepts stands for the daemon's intercepts: DialVolumes reaches a real agent SFTP server
// (agent/volumes) on a loopback port, for the intercept named "echo" only.
type agentIntercepts struct {
	addr string
	mu   sync.Mutex
	down bool // the intercept is gone
}

func (a *agentIntercepts) DialVolumes(ctx context.Context, name string) (net.Conn, error) {
	a.mu.Lock()
	down := a.down
	a.mu.Unlock()
	if name != "echo" || down {
		return nil, errors.New("intercept " + name + " is not active yet")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", a.addr)
}

func (*agentIntercepts) Create(context.Context, intercept.Request) (*managerv1.InterceptInfo, error) {
	return nil, errors.ErrUnsupported
}
func (*agentIntercepts) Remove(context.Context, string) error { return errors.ErrUnsupported }
func (*agentIntercepts) List() []*managerv1.InterceptInfo     { return nil }
func (*agentIntercepts) Counters(context.Context) (map[string]*managerv1.InterceptCounters, error) {
	return nil, errors.ErrUnsupported
}
func (*agentIntercepts) Workloads(context.Context, string) (*managerv1.ListWorkloadsResponse, error) {
	return nil, errors.ErrUnsupported
}

type fakeSession struct{}

func (fakeSession) Info() daemon.SessionInfo { return daemon.SessionInfo{State: "connected"} }
func (fakeSession) Close() error             { return nil }

// pod is an agent serving two folders (as the pod's /config, read-only, and /data) behind a daemon.
type pod struct {
	config, data string
	icpt         *agentIntercepts
	daemonAddr   string
	stopAgent    func()
}

func startPod(t *testing.T) *pod {
	t.Helper()
	p := &pod{config: t.TempDir(), data: t.TempDir()}
	fsys, err := volumes.New([]volumes.Mount{
		{PodPath: "/app/config", Dir: p.config, ReadOnly: true},
		{PodPath: "/app/data", Dir: p.data},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() { _ = fsys.Serve(c); c.Close() })
		}
	})
	var once sync.Once
	p.stopAgent = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
			fsys.Close()
		})
	}
	t.Cleanup(p.stopAgent)

	p.icpt = &agentIntercepts{addr: ln.Addr().String()}
	d, err := daemon.New(daemon.Config{ListenAddr: "127.0.0.1:0", Token: testToken}, fakeSession{}, p.icpt, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	p.daemonAddr = d.Addr().String()
	return p
}

func (p *pod) remote(t *testing.T, intercept string) *Remote {
	t.Helper()
	r, err := NewRemote(Config{Daemon: p.daemonAddr, Token: testToken, Intercept: intercept,
		DialTimeout: 2 * time.Second, OpTimeout: 2 * time.Second}, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRemoteErrors(t *testing.T) {
	p := startPod(t)
	ctx := context.Background()

	// An intercept the daemon does not have: the dial fails at once, it does not hang.
	c := &Copy{Remote: p.remote(t, "other"), From: "/app/data", To: t.TempDir()}
	start := time.Now()
	if _, err := c.Sync(ctx); err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("sync of an unknown intercept: %v after %s, want a fast error", err, time.Since(start))
	}

	// A wrong token is refused.
	r, err := NewRemote(Config{Daemon: p.daemonAddr, Token: "wrong", Intercept: "echo"}, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := (&Copy{Remote: r, From: "/app/data", To: t.TempDir()}).Sync(ctx); err == nil {
		t.Fatal("sync with a wrong token worked")
	}

	if _, err := NewRemote(Config{Daemon: p.daemonAddr}, discard); err == nil {
		t.Error("NewRemote without token and intercept worked")
	}
}

// A FUSE request's context ends when the caller gets any signal (Go programs get SIGURG all the
// time); an operation in flight must not fail for that.
func TestDoIgnoresCancelOfARunningOp(t *testing.T) {
	p := startPod(t)
	write(t, filepath.Join(p.data, "a.txt"), "a")
	r := p.remote(t, "echo")
	if err := Check(context.Background(), r, "/app/data"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Check(ctx, r, "/app/data"); err != nil {
		t.Errorf("an op with a cancelled context on a live session: %v", err)
	}
}
