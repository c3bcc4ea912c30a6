package flow

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// memEnd is an in-memory end of a flow: Read takes datagrams from rx, Write puts them on tx.
type memEnd struct {
	rx, tx chan []byte
	closed chan struct{}
	once   sync.Once
}

// newEchoEnd returns a far end that answers every datagram with itself.
func newEchoEnd() *memEnd {
	q := make(chan []byte, 16)
	return &memEnd{rx: q, tx: q, closed: make(chan struct{})}
}

func (e *memEnd) Read(b []byte) (int, error) {
	select {
	case d := <-e.rx:
		return copy(b, d), nil
	case <-e.closed:
		return 0, io.EOF
	}
}

func (e *memEnd) Write(b []byte) (int, error) {
	select {
	case e.tx <- bytes.Clone(b):
		return len(b), nil
	case <-e.closed:
		return 0, net.ErrClosed
	}
}

func (e *memEnd) Close() error { e.once.Do(func() { close(e.closed) }); return nil }

func (e *memEnd) isClosed() bool {
	select {
	case <-e.closed:
		return true
	default:
		return false
	}
}

// reply is one datagram a table sent back to a source.
type reply struct {
	key  string
	data string
}

// testTable is a UDPTable keyed by strings whose far ends are echoEnds, recorded in dial order.
type testTable struct {
	*UDPTable[string]
	mu      sync.Mutex
	ends    []*memEnd
	replies chan reply
}

func newTestTable(t *testing.T, cfg UDPConfig[string]) *testTable {
	t.Helper()
	tt := &testTable{replies: make(chan reply, 64)}
	if cfg.Dial == nil {
		cfg.Dial = func(context.Context, string) (Datagrams, error) {
			e := newEchoEnd()
			tt.mu.Lock()
			tt.ends = append(tt.ends, e)
			tt.mu.Unlock()
			return e, nil
		}
	}
	cfg.Reply = func(key string, b []byte) error {
		tt.replies <- reply{key, string(b)}
		return nil
	}
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	tt.UDPTable = NewUDPTable(context.Background(), cfg)
	t.Cleanup(tt.Close)
	return tt
}

func (tt *testTable) dials() int {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return len(tt.ends)
}

func (tt *testTable) end(i int) *memEnd {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return tt.ends[i]
}

// exchange delivers data from key and waits for the echo.
func (tt *testTable) exchange(t *testing.T, key, data string) {
	t.Helper()
	if !tt.Deliver(key, []byte(data)) {
		t.Fatalf("Deliver(%s) refused", key)
	}
	select {
	case r := <-tt.replies:
		if r != (reply{key, data}) {
			t.Fatalf("reply %+v, want %s from %s", r, data, key)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no reply to %s", key)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUDPTableFlowPerKey: one flow, one dial, per source; replies go back to their source; Close
// ends every flow and closes its far end.
func TestUDPTableFlowPerKey(t *testing.T) {
	tt := newTestTable(t, UDPConfig[string]{})
	for _, key := range []string{"a", "b", "a", "b", "a"} {
		tt.exchange(t, key, "hello "+key)
	}
	if n := tt.dials(); n != 2 {
		t.Errorf("%d dials, want one per source", n)
	}
	if s := tt.Stats(); s.Open != 2 || s.Flows != 2 || s.DialFailures != 0 || s.Drops != 0 {
		t.Errorf("stats %+v, want 2 open flows and nothing failed", s)
	}
	tt.Close()
	tt.Close() // idempotent
	for i := range 2 {
		if !tt.end(i).isClosed() {
			t.Errorf("far end %d still open after Close", i)
		}
	}
	if s := tt.Stats(); s.Open != 0 {
		t.Errorf("%d flows open after Close", s.Open)
	}
	if tt.Deliver("a", []byte("late")) {
		t.Error("Deliver accepted a datagram after Close")
	}
	if tt.Attach("c", newEchoEnd()) {
		t.Error("Attach accepted a flow after Close")
	}
}

// TestUDPTableIdle: activity either way keeps a flow; once idle for the timeout it ends, closes its
// far end, and the next datagram from the same source dials again.
func TestUDPTableIdle(t *testing.T) {
	tt := newTestTable(t, UDPConfig[string]{Idle: 300 * time.Millisecond})
	// Exchanges 50 ms apart for twice the timeout keep the one flow alive.
	for start := time.Now(); time.Since(start) < 600*time.Millisecond; time.Sleep(50 * time.Millisecond) {
		tt.exchange(t, "a", "ping")
	}
	if n := tt.dials(); n != 1 {
		t.Errorf("%d dials while active, want 1", n)
	}
	waitFor(t, "the idle flow to end", func() bool { return tt.Stats().Open == 0 })
	if !tt.end(0).isClosed() {
		t.Error("idle flow's far end still open")
	}
	tt.exchange(t, "a", "again")
	if n := tt.dials(); n != 2 {
		t.Errorf("%d dials, want a second one after the idle timeout", n)
	}
}

// TestUDPTableNoIdle: without an idle timeout a flow lasts until its far end ends it.
func TestUDPTableNoIdle(t *testing.T) {
	tt := newTestTable(t, UDPConfig[string]{})
	tt.exchange(t, "a", "ping")
	tt.end(0).Close()
	waitFor(t, "the flow to end with its far end", func() bool { return tt.Stats().Open == 0 })
	tt.exchange(t, "a", "again")
	if n := tt.dials(); n != 2 {
		t.Errorf("%d dials, want a new flow after the far end ended the first", n)
	}
}

// TestUDPTableDialFailure: a failed dial is counted and drops the flow; the next datagram tries
// again.
func TestUDPTableDialFailure(t *testing.T) {
	refused := errors.New("refused")
	tt := newTestTable(t, UDPConfig[string]{Dial: func(context.Context, string) (Datagrams, error) { return nil, refused }})
	for want := uint64(1); want <= 2; want++ {
		tt.Deliver("a", []byte("q"))
		waitFor(t, "the dial failure", func() bool { s := tt.Stats(); return s.DialFailures == want && s.Open == 0 })
	}
	if s := tt.Stats(); s.Flows != 0 {
		t.Errorf("stats %+v, want no flow", s)
	}
}

// TestUDPTableDrops: datagrams beyond the queue of a flow that is still dialing are dropped and
// counted; the queued ones go through once the dial completes.
func TestUDPTableDrops(t *testing.T) {
	release := make(chan struct{})
	far := newEchoEnd()
	tt := newTestTable(t, UDPConfig[string]{Queue: 3, Dial: func(ctx context.Context, _ string) (Datagrams, error) {
		select {
		case <-release:
			return far, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	for range 5 {
		tt.Deliver("a", []byte("x"))
	}
	if s := tt.Stats(); s.Drops != 2 {
		t.Errorf("%d drops, want the 2 beyond the queue of 3", s.Drops)
	}
	close(release)
	for i := range 3 {
		select {
		case <-tt.replies:
		case <-time.After(5 * time.Second):
			t.Fatalf("queued datagram %d never arrived", i)
		}
	}
}

// TestUDPTableDialTimeout: a dial that hangs is given up after DialTimeout.
func TestUDPTableDialTimeout(t *testing.T) {
	tt := newTestTable(t, UDPConfig[string]{DialTimeout: 50 * time.Millisecond, Dial: func(ctx context.Context, _ string) (Datagrams, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	tt.Deliver("a", []byte("q"))
	waitFor(t, "the dial to time out", func() bool { return tt.Stats().DialFailures == 1 })
}

// TestUDPTableAttach: a flow with its own near end copies both ways, and the table closes that
// end when the flow ends.
func TestUDPTableAttach(t *testing.T) {
	tt := newTestTable(t, UDPConfig[string]{})
	near := &memEnd{rx: make(chan []byte, 1), tx: make(chan []byte, 1), closed: make(chan struct{})}
	if !tt.Attach("a", near) {
		t.Fatal("Attach refused")
	}
	near.rx <- []byte("ping")
	select {
	case d := <-near.tx:
		if string(d) != "ping" {
			t.Errorf("near end got %q back, want ping", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo through the attached flow")
	}
	tt.Close()
	if !near.isClosed() || !tt.end(0).isClosed() {
		t.Error("Close left an end of the attached flow open")
	}
}

// TestUDPTableContext: cancelling the table's context ends its flows too.
func TestUDPTableContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	far := newEchoEnd()
	tab := NewUDPTable(ctx, UDPConfig[string]{
		Dial:  func(context.Context, string) (Datagrams, error) { return far, nil },
		Reply: func(string, []byte) error { return nil },
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer tab.Close()
	tab.Deliver("a", []byte("x"))
	waitFor(t, "the flow to start", func() bool { return tab.Stats().Flows == 1 })
	cancel()
	waitFor(t, "the flow to end", func() bool { return tab.Stats().Open == 0 })
	if !far.isClosed() {
		t.Error("far end still open")
	}
	if tab.Deliver("a", []byte("y")) {
		t.Error("Deliver accepted a datagram after the context ended")
	}
}
