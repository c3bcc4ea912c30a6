package flow

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestRedial: an attempt that times out is made again on a new socket, sooner than the caller's
// deadline; refusals and UDP are not retried.
func TestRedial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var attempts atomic.Int32
	// The first two attempts hang as a SYN to a gone pod does; the third connects.
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		if attempts.Add(1) <= 2 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := Redial(dial, 50*time.Millisecond)(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := attempts.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s", took)
	}

	refused := errors.New("connection refused")
	attempts.Store(0)
	fail := func(context.Context, string, string) (net.Conn, error) { attempts.Add(1); return nil, refused }
	if _, err := Redial(fail, time.Millisecond)(ctx, "tcp", "x:1"); !errors.Is(err, refused) || attempts.Load() != 1 {
		t.Errorf("refused: %v after %d attempts, want one attempt", err, attempts.Load())
	}
	attempts.Store(0)
	timedOut := func(context.Context, string, string) (net.Conn, error) {
		attempts.Add(1)
		return nil, context.DeadlineExceeded
	}
	if _, err := Redial(timedOut, time.Millisecond)(ctx, "udp", "x:1"); err == nil || attempts.Load() != 1 {
		t.Errorf("udp: %v after %d attempts, want one attempt", err, attempts.Load())
	}
}

// TestRedialGivesUpWithTheCaller: the caller's deadline ends the retries.
func TestRedialGivesUpWithTheCaller(t *testing.T) {
	hang := func(ctx context.Context, _, _ string) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Redial(hang, 30*time.Millisecond)(ctx, "tcp", "x:1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the caller's deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("gave up after %s, want at the caller's 200ms", took)
	}
}
