package manager

import (
	"context"
	"fmt"
	"sync"
	"time"

	"teledock.dev/teledock/cluster/inject"
)

// notifier broadcasts "something changed" to any number of waiters. A waiter takes the channel
// before it looks at the state, so that a change in between is not missed.
type notifier struct {
	mu sync.Mutex // mu guards ch
	ch chan struct{}
}

// wait returns a channel that is closed at the next notify.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// The webhook asks for every pod created in the cluster, and a Deployment's ReplicaSets get new
// names, so recordingSource drops old notes once there are many.
const (
	maxAsked    = 4096
	askedMaxAge = 10 * time.Minute
)

// recordingSource is the webhook's ConfigSource: the store, plus a note of when the webhook last
// asked about each workload name. It plans the configs of annotated workloads with plan.
//
// Only this manager's configs count (their agents reach managerAddress): agent configs share one
// ConfigMap per namespace, and another install's injector would otherwise inject them too, with
// its own version's mutation and whether or not their manager's injector can be reached.
type recordingSource struct {
	src            inject.ConfigSource
	plan           func(ctx context.Context, namespace, kind, name string) (inject.AgentConfig, error)
	managerAddress string

	mu    sync.Mutex // mu guards asked
	asked map[string]time.Time
}

var (
	_ inject.ConfigSource     = (*recordingSource)(nil)
	_ inject.AnnotatedPlanner = (*recordingSource)(nil)
)

func newRecordingSource(src inject.ConfigSource, plan func(ctx context.Context, namespace, kind, name string) (inject.AgentConfig, error), managerAddress string) *recordingSource {
	return &recordingSource{src: src, plan: plan, managerAddress: managerAddress, asked: make(map[string]time.Time)}
}

// AgentConfig implements inject.ConfigSource.
func (r *recordingSource) AgentConfig(ctx context.Context, namespace, workload string) (inject.AgentConfig, error) {
	now := time.Now()
	r.mu.Lock()
	if len(r.asked) >= maxAsked {
		for k, at := range r.asked {
			if now.Sub(at) > askedMaxAge {
				delete(r.asked, k)
			}
		}
	}
	r.asked[namespace+"/"+workload] = now
	r.mu.Unlock()
	cfg, err := r.src.AgentConfig(ctx, namespace, workload)
	if err == nil && cfg.ManagerAddress != r.managerAddress {
		return inject.AgentConfig{}, fmt.Errorf("%w for %s/%s: the config is another traffic-manager's (%s)",
			inject.ErrNoConfig, namespace, workload, cfg.ManagerAddress)
	}
	return cfg, err
}

// PlanAnnotated implements inject.AnnotatedPlanner.
func (r *recordingSource) PlanAnnotated(ctx context.Context, namespace, kind, name string) (inject.AgentConfig, error) {
	return r.plan(ctx, namespace, kind, name)
}

// askedSince reports whether the webhook looked up the workload's config at or after t.
func (r *recordingSource) askedSince(namespace, workload string, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.asked[namespace+"/"+workload]
	return ok && !at.Before(t)
}

// tasks runs background work that shutdown waits for. Once closed, it starts nothing more, so
// that a session ending during shutdown does not race with the wait.
type tasks struct {
	mu     sync.Mutex // mu guards closed and wg.Go
	closed bool
	wg     sync.WaitGroup
}

// Go runs f in a goroutine unless the tasks are closed.
func (t *tasks) Go(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.wg.Go(f)
	}
}

// close starts nothing more and waits for what runs.
func (t *tasks) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
