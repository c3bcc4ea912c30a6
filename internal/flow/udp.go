package flow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Datagrams is one end of a UDP flow: each Read and Write carries one datagram. Close must
// unblock a pending Read or Write, since the table ends flows from another goroutine.
// *tunnel.Conn, a connected *net.UDPConn and gVisor's *gonet.UDPConn are Datagrams.
type Datagrams interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
}

// DefaultUDPQueue is how many datagrams of one flow wait for its far end (dialing, or slow) when
// UDPConfig.Queue is zero; more are dropped, as a full socket buffer would drop them.
const DefaultUDPQueue = 64

// UDPConfig is what a UDPTable needs. K names a flow: the source address for a listening socket,
// the (source, destination) pair for a stack that demultiplexes flows itself.
type UDPConfig[K comparable] struct {
	// Dial opens the far end of a new flow. Required. ctx ends when the table closes, or after
	// DialTimeout.
	Dial func(ctx context.Context, key K) (Datagrams, error)
	// DialTimeout bounds each Dial; zero leaves only the table's context.
	DialTimeout time.Duration
	// Idle ends a flow that carried no datagram either way for this long. Zero means the table
	// never expires a flow itself: the far end does (its stream ends, and so does the flow).
	Idle time.Duration
	// Reply sends a datagram from the far end back to the flow's source. Required for flows
	// started by Deliver (a shared listening socket); flows given to Attach write to their own end.
	Reply func(key K, b []byte) error
	// Queue is how many datagrams of a Deliver flow wait; DefaultUDPQueue when zero.
	Queue int
	// Log gets one debug record per flow end and per failed dial. Required.
	Log *slog.Logger
}

// UDPStats counts a table's flows.
type UDPStats struct {
	Open         int    // flows running now, dialing included
	Flows        uint64 // flows whose far end was dialed, since the start
	DialFailures uint64 // flows dropped because Dial failed
	Drops        uint64 // datagrams dropped because their flow's queue was full
}

// UDPTable maps each flow's key to a flow through Dial's far end, starts and waits for the
// flows' goroutines, and ends a flow when it has been idle, when either end fails, or when the
// table closes. A datagram that comes after its flow ended starts a new flow.
type UDPTable[K comparable] struct {
	cfg    UDPConfig[K]
	ctx    context.Context // cancelled by Close; every dial and flow derives from it
	cancel context.CancelFunc

	mu     sync.Mutex // guards flows, closed and the Add side of wg
	flows  map[K]*queued
	closed bool
	wg     sync.WaitGroup

	open                      atomic.Int64
	dialed, dialFailed, drops atomic.Uint64
}

// NewUDPTable returns an empty table whose flows end when ctx does or when Close is called.
func NewUDPTable[K comparable](ctx context.Context, cfg UDPConfig[K]) *UDPTable[K] {
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultUDPQueue
	}
	ctx, cancel := context.WithCancel(ctx)
	return &UDPTable[K]{cfg: cfg, ctx: ctx, cancel: cancel, flows: map[K]*queued{}}
}

// Deliver hands a datagram read from a shared socket to key's flow, starting one when there is
// none. b is copied. It reports false once the table is closed; the caller should stop reading.
func (t *UDPTable[K]) Deliver(key K, b []byte) bool {
	t.mu.Lock()
	q := t.flows[key]
	if q == nil || q.ended() {
		if !t.startLocked() {
			t.mu.Unlock()
			return false
		}
		q = &queued{in: make(chan []byte, t.cfg.Queue), done: make(chan struct{})}
		q.reply = func(b []byte) error { return t.cfg.Reply(key, b) }
		t.flows[key] = q
		go t.run(key, q, func() { t.forget(key, q) })
	}
	t.mu.Unlock()
	select {
	case q.in <- bytes.Clone(b):
	default:
		t.drops.Add(1)
	}
	return true
}

// Attach runs a flow whose near end is its own connected endpoint, for a stack that has already
// told flows apart. The table closes local when the flow ends. It reports false, and leaves local
// to the caller, once the table is closed. Attach does not block.
func (t *UDPTable[K]) Attach(key K, local Datagrams) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.startLocked() {
		return false
	}
	go t.run(key, local, func() {})
	return true
}

// startLocked registers a flow goroutine with Close, unless the table is closed.
func (t *UDPTable[K]) startLocked() bool {
	if t.closed || t.ctx.Err() != nil {
		return false
	}
	t.wg.Add(1)
	t.open.Add(1)
	return true
}

// forget removes q from the table, unless a later flow of the same key has replaced it.
func (t *UDPTable[K]) forget(key K, q *queued) {
	t.mu.Lock()
	if t.flows[key] == q {
		delete(t.flows, key)
	}
	t.mu.Unlock()
}

// Close ends every flow and waits for their goroutines. It may be called more than once.
func (t *UDPTable[K]) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// Stats returns the counters.
func (t *UDPTable[K]) Stats() UDPStats {
	return UDPStats{
		Open:         int(t.open.Load()),
		Flows:        t.dialed.Load(),
		DialFailures: t.dialFailed.Load(),
		Drops:        t.drops.Load(),
	}
}

// Reasons a flow ended, for the debug log.
var (
	errIdle        = errors.New("idle timeout")
	errTableClosed = errors.New("flow table closed")
)

// run dials key's far end and carries the flow until it ends, then closes both ends.
func (t *UDPTable[K]) run(key K, local Datagrams, forget func()) {
	defer t.wg.Done()
	defer t.open.Add(-1)
	defer forget()
	err := t.carry(key, local)
	if t.cfg.Log.Enabled(t.ctx, slog.LevelDebug) {
		t.cfg.Log.Debug("udp flow ended", "flow", key, "err", err)
	}
}

// carry dials, then copies datagrams both ways until the flow ends; it closes local.
func (t *UDPTable[K]) carry(key K, local Datagrams) error {
	remote, err := t.dial(key)
	if err != nil {
		_ = local.Close()
		t.dialFailed.Add(1)
		return fmt.Errorf("dial: %w", err)
	}
	t.dialed.Add(1)
	// last is the time of the latest datagram either way, in Unix nanoseconds: the copies only
	// store it, and the idle timer checks it when it fires and re-arms for the remainder.
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { done <- copyDatagrams(remote, local, &last, "client -> far end") })
	wg.Go(func() { done <- copyDatagrams(local, remote, &last, "far end -> client") })
	end := t.wait(done, &last)
	// Closing both unblocks whichever copy still runs.
	_ = local.Close()
	_ = remote.Close()
	wg.Wait()
	return end
}

// dial opens key's far end within DialTimeout.
func (t *UDPTable[K]) dial(key K) (Datagrams, error) {
	ctx := t.ctx
	if t.cfg.DialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.cfg.DialTimeout)
		defer cancel()
	}
	return t.cfg.Dial(ctx, key)
}

// wait returns why the flow ends: a copy's error, idleness, or the table closing.
func (t *UDPTable[K]) wait(done <-chan error, last *atomic.Int64) error {
	var timer *time.Timer
	var expire <-chan time.Time // nil, never ready, without an idle timeout
	if t.cfg.Idle > 0 {
		timer = time.NewTimer(t.cfg.Idle)
		defer timer.Stop()
		expire = timer.C
	}
	for {
		select {
		case err := <-done:
			return err
		case <-t.ctx.Done():
			return errTableClosed
		case <-expire:
			rest := t.cfg.Idle - time.Since(time.Unix(0, last.Load()))
			if rest <= 0 {
				return errIdle
			}
			timer.Reset(rest)
		}
	}
}

// copyDatagrams forwards datagrams from src to dst one at a time, recording activity in last. It
// returns when either side fails; io.EOF from src counts as a failure too, since a datagram flow
// has no half-close.
func copyDatagrams(dst, src Datagrams, last *atomic.Int64, dir string) error {
	// The buffer is larger than any UDP payload, so no datagram is ever truncated.
	bp := GetBuffer()
	defer PutBuffer(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if err != nil {
			return fmt.Errorf("%s: read: %w", dir, err)
		}
		last.Store(time.Now().UnixNano())
		if _, err := dst.Write(buf[:n]); err != nil {
			return fmt.Errorf("%s: write: %w", dir, err)
		}
	}
}

// queued is the near end of a flow whose datagrams arrive on a shared socket: Deliver queues
// them, Read takes them off the queue, and Write replies through the socket.
type queued struct {
	in    chan []byte
	reply func([]byte) error
	done  chan struct{} // closed by Close: the flow has ended
	once  sync.Once
}

func (q *queued) Read(b []byte) (int, error) {
	select {
	case d := <-q.in:
		return copy(b, d), nil
	case <-q.done:
		return 0, net.ErrClosed
	}
}

func (q *queued) Write(b []byte) (int, error) {
	if q.ended() {
		return 0, net.ErrClosed
	}
	if err := q.reply(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (q *queued) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *queued) ended() bool {
	select {
	case <-q.done:
		return true
	default:
		return false
	}
}
