package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/intercept"
)

// liveIntercepts keeps intercepts by name, as the daemon's do, and tells when one is removed.
type liveIntercepts struct {
	fakeIntercepts
	mu      sync.Mutex
	byName  map[string]*managerv1.InterceptInfo
	n       int
	removed chan string
}

func newLiveIntercepts() *liveIntercepts {
	return &liveIntercepts{byName: map[string]*managerv1.InterceptInfo{}, removed: make(chan string, 10)}
}

func (f *liveIntercepts) Create(_ context.Context, req intercept.Request) (*managerv1.InterceptInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	info := &managerv1.InterceptInfo{Id: fmt.Sprintf("i-%d", f.n), Name: req.Name}
	f.byName[req.Name] = info
	return info, nil
}

func (f *liveIntercepts) Remove(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byName[name] == nil {
		return intercept.ErrNotFound
	}
	delete(f.byName, name)
	f.removed <- name
	return nil
}

func (f *liveIntercepts) List() []*managerv1.InterceptInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*managerv1.InterceptInfo
	for _, i := range f.byName {
		out = append(out, i)
	}
	return out
}

func (f *liveIntercepts) has(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byName[name] != nil
}

func waitRemoved(t *testing.T, f *liveIntercepts, name string, within time.Duration) {
	t.Helper()
	select {
	case got := <-f.removed:
		if got != name {
			t.Fatalf("removed %q, want %q", got, name)
		}
	case <-time.After(within):
		t.Fatalf("intercept %q not removed within %s", name, within)
	}
}

// TestHoldEndsWithItsCaller: a held intercept goes when its holder goes (the CLI was killed), and
// stays when it was removed and made again by someone else meanwhile.
func TestHoldEndsWithItsCaller(t *testing.T) {
	f := newLiveIntercepts()
	client := dialTest(t, startDaemonWith(t, &fakeSession{}, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	hold := func(name string) context.CancelFunc {
		t.Helper()
		hctx, stop := context.WithCancel(ctx)
		stream, err := client.HoldIntercept(hctx, &daemonv1.HoldInterceptRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("hold %s: %v", name, err)
		}
		return stop
	}
	create := func(name string) {
		t.Helper()
		if _, err := client.CreateIntercept(ctx, &daemonv1.CreateInterceptRequest{Name: name, Held: true}); err != nil {
			t.Fatal(err)
		}
	}

	create("a")
	stop := hold("a")
	stop()
	waitRemoved(t, f, "a", 5*time.Second)

	// Removed by `leave` and made again (not held) while the old holder still runs: the old hold's
	// end must not take the new intercept.
	create("b")
	stop = hold("b")
	if _, err := client.RemoveIntercept(ctx, &daemonv1.RemoveInterceptRequest{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	<-f.removed
	if _, err := client.CreateIntercept(ctx, &daemonv1.CreateInterceptRequest{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case name := <-f.removed:
		t.Fatalf("intercept %s removed, but its holder held an earlier one", name)
	case <-time.After(300 * time.Millisecond): // a removal would come within a round trip
	}
	if !f.has("b") {
		t.Fatal("intercept b is gone")
	}

	// A hold of an intercept that does not exist says so.
	stream, err := client.HoldIntercept(ctx, &daemonv1.HoldInterceptRequest{Name: "nope"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("hold of a missing intercept: %v, want NotFound", err)
	}
}

// TestHeldInterceptWithoutHoldIsRemoved: created with held=true, but the caller died before it could
// hold it.
func TestHeldInterceptWithoutHoldIsRemoved(t *testing.T) {
	f := newLiveIntercepts()
	h := newHolds(f, slog.New(slog.DiscardHandler), make(chan struct{}))
	h.wait = 50 * time.Millisecond
	info, _ := f.Create(context.Background(), intercept.Request{Name: "a"})
	h.expect("a", info.GetId())
	waitRemoved(t, f, "a", 5*time.Second)

	// With its hold in time, it stays until the hold ends.
	info, _ = f.Create(context.Background(), intercept.Request{Name: "c"})
	h.expect("c", info.GetId())
	ctx, cancel := context.WithCancel(context.Background())
	held := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- h.hold(ctx, "c", func(*daemonv1.HoldInterceptResponse) error { close(held); return nil })
	}()
	<-held
	select {
	case name := <-f.removed:
		t.Fatalf("held intercept %s removed", name)
	case <-time.After(4 * h.wait):
	}
	cancel()
	<-done
	waitRemoved(t, f, "c", 5*time.Second)
}

// TestHoldsEndWhenTheDaemonStops: a stopping daemon ends hold streams and leaves the intercepts to
// the session's departure.
func TestHoldsEndWhenTheDaemonStops(t *testing.T) {
	f := newLiveIntercepts()
	stopping := make(chan struct{})
	h := newHolds(f, slog.New(slog.DiscardHandler), stopping)
	f.Create(context.Background(), intercept.Request{Name: "a"})
	done := make(chan error)
	go func() {
		done <- h.hold(context.Background(), "a", func(*daemonv1.HoldInterceptResponse) error { return nil })
	}()
	close(stopping)
	select {
	case err := <-done:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("hold ended with %v, want Unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("hold did not end when the daemon stopped")
	}
	if !f.has("a") {
		t.Fatal("the intercept was removed by a stopping daemon")
	}
}
