package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"teledock.dev/teledock/internal/flow"
	"teledock.dev/teledock/tunnel"
)

const (
	// spareCount is how many connections a spares pool keeps ready for the next flows.
	spareCount = 2
	// spareAge is how long a spare is trusted: less than the manager's wait for a hello
	// (cluster/direct's helloTimeout and cluster/manager's framedHelloTimeout, 60s), so the
	// manager never drops one under a new flow.
	spareAge = 45 * time.Second
)

// spares keeps connections dialled ahead, so that a flow waits for one round trip (its hello and
// the manager's dial) rather than for its connection's set-up too: a TCP and TLS handshake on the
// direct port, two stream round trips on a port-forward. Filling starts with warm, or at the
// first take, so that a session that never uses a kind of tunnel need not dial one.
type spares[T any] struct {
	dial    func(context.Context) (T, error)
	discard func(T)
	// stop says filling should end for good (a manager without this kind of tunnel).
	stop func() bool
	log  *slog.Logger

	ready chan spare[T]
	wake  chan struct{}
	start sync.Once
	ctx   context.Context
	end   context.CancelFunc
	done  sync.WaitGroup
}

type spare[T any] struct {
	conn T
	at   time.Time
}

func newSpares[T any](dial func(context.Context) (T, error), discard func(T), stop func() bool, log *slog.Logger) *spares[T] {
	ctx, cancel := context.WithCancel(context.Background())
	return &spares[T]{dial: dial, discard: discard, stop: stop, log: log,
		ready: make(chan spare[T], spareCount), wake: make(chan struct{}, 1), ctx: ctx, end: cancel}
}

// fill keeps the pool full, dialling again after each take, with a backoff after failures.
func (p *spares[T]) fill() {
	defer p.done.Done()
	newWait := func() func() time.Duration { return flow.Backoff(250*time.Millisecond, 10*time.Second, 0.2) }
	wait := newWait()
	for p.ctx.Err() == nil && !p.stop() {
		if len(p.ready) == cap(p.ready) {
			select {
			case <-p.wake:
				continue
			case <-p.ctx.Done():
				return
			}
		}
		c, err := p.dial(p.ctx)
		if err != nil {
			if p.stop() {
				return
			}
			p.log.Debug("dial ahead", "err", err)
			flow.Sleep(p.ctx, wait())
			continue
		}
		wait = newWait()
		select {
		case p.ready <- spare[T]{conn: c, at: time.Now()}:
		default:
			p.discard(c)
		}
	}
}

// take returns a fresh spare, or dials a connection when there is none. reused says it was a
// spare, which the manager may have dropped meanwhile (a restart): the caller may then try once
// more.
func (p *spares[T]) take(ctx context.Context) (c T, reused bool, err error) {
	p.warm()
	defer func() {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}()
	for {
		select {
		case s := <-p.ready:
			if time.Since(s.at) < spareAge {
				return s.conn, true, nil
			}
			p.discard(s.conn)
		default:
			c, err := p.dial(ctx)
			return c, false, err
		}
	}
}

// warm starts filling the pool, once.
func (p *spares[T]) warm() {
	p.start.Do(func() {
		p.done.Add(1)
		go p.fill()
	})
}

// close stops filling and discards the spares.
func (p *spares[T]) close() {
	p.end()
	p.done.Wait()
	for {
		select {
		case s := <-p.ready:
			p.discard(s.conn)
		default:
			return
		}
	}
}

// openRaw starts a raw tunnel to dst on a connection from p, with hello's session and token. A
// spare that fails before the manager's answer (the manager dropped it) is replaced by a fresh
// connection. ErrNoRaw (wrapped): use a Tunnel stream, and failed has been told about the fresh
// connection that failed; a *tunnel.DialError: the destination's answer.
func openRaw[T any](ctx context.Context, p *spares[T], end func(T) tunnel.RawEnd, token, sessionID string, dst netip.AddrPort,
	failed func(T, error)) (tunnel.RawEnd, error) {
	for {
		c, reused, err := p.take(ctx)
		if errors.Is(err, ErrNoRaw) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoRaw, err)
		}
		conn := end(c)
		err = tunnel.DialRaw(ctx, conn, token, sessionID, dst)
		var derr *tunnel.DialError
		switch {
		case err == nil:
			return conn, nil
		case errors.As(err, &derr), ctx.Err() != nil:
			return nil, err
		case reused:
			p.log.Debug("a spare failed; dialling anew", "err", err)
			continue
		}
		failed(c, err)
		return nil, fmt.Errorf("%w: %w", ErrNoRaw, err)
	}
}
