package daemon

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/daemoncontainer/intercept"
)

// holdWait is how long an intercept created with held=true waits for its HoldIntercept call.
const holdWait = 10 * time.Second

// holds ties intercepts to the life of the CLI that made them (`intercept --docker-run`): when the
// CLI is killed, nothing else would ever remove them, and the cluster's traffic would keep going to
// a handler that nobody runs any more.
type holds struct {
	icpt Intercepts
	log  *slog.Logger
	wait time.Duration
	// done ends every hold stream (the daemon stops) without removing the intercepts: the session's
	// departure ends them at the manager.
	done <-chan struct{}

	mu sync.Mutex
	// held counts the hold streams per intercept ID; an ID with a timer waits for its first.
	held   map[string]int
	timers map[string]*time.Timer
}

func newHolds(icpt Intercepts, log *slog.Logger, done <-chan struct{}) *holds {
	return &holds{icpt: icpt, log: log, wait: holdWait, done: done, held: map[string]int{}, timers: map[string]*time.Timer{}}
}

// expect starts the wait for the hold of an intercept just created with held=true.
func (h *holds) expect(name, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held[id] > 0 || h.timers[id] != nil {
		return
	}
	h.timers[id] = time.AfterFunc(h.wait, func() {
		h.mu.Lock()
		delete(h.timers, id)
		held := h.held[id] > 0
		h.mu.Unlock()
		if !held {
			h.release(name, id, "no hold arrived within "+h.wait.String())
		}
	})
}

// hold serves one HoldIntercept call until its caller or the daemon goes.
func (h *holds) hold(ctx context.Context, name string, send func(*daemonv1.HoldInterceptResponse) error) error {
	id := h.currentID(name)
	if id == "" {
		return status.Errorf(codes.NotFound, "%v: %s", intercept.ErrNotFound, name)
	}
	h.mu.Lock()
	h.held[id]++
	if t := h.timers[id]; t != nil {
		t.Stop()
		delete(h.timers, id)
	}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.held[id]--; h.held[id] <= 0 {
			delete(h.held, id)
		}
		h.mu.Unlock()
	}()

	if err := send(&daemonv1.HoldInterceptResponse{InterceptId: id}); err != nil {
		h.release(name, id, "the holder went away")
		return err
	}
	select {
	case <-h.done:
		return status.Error(codes.Unavailable, "the daemon is stopping")
	case <-ctx.Done():
	}
	h.release(name, id, "the holder went away")
	return ctx.Err()
}

// release removes the intercept if it is still the one that was held and nobody else holds it.
func (h *holds) release(name, id, why string) {
	select {
	case <-h.done:
		return
	default:
	}
	h.mu.Lock()
	stillHeld := h.held[id] > 1 // the caller's own count is dropped after release
	h.mu.Unlock()
	if stillHeld || h.currentID(name) != id {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := h.icpt.Remove(ctx, name)
	switch {
	case err == nil:
		h.log.Info("intercept removed: its holder is gone", "name", name, "why", why)
	case errors.Is(err, intercept.ErrNotFound):
	default:
		h.log.Warn("removing an intercept whose holder is gone", "name", name, "err", err)
	}
}

func (h *holds) currentID(name string) string {
	for _, info := range h.icpt.List() {
		if info.GetName() == name {
			return info.GetId()
		}
	}
	return ""
}
