package flow

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff returns the waits of a retry loop: first, then twice as long each time up to max, each
// spread by up to ±jitter (a fraction; 0 for none) so that clients that failed together do not
// come back in lockstep. Start a new one to begin again from first.
//
// It is not k8s.io/apimachinery's wait.Backoff because the traffic-agent, which uses it too, keeps
// Kubernetes libraries out of its binary (see agent/cmd/traffic-agent's deps_test.go).
func Backoff(first, max time.Duration, jitter float64) func() time.Duration {
	next := first
	return func() time.Duration {
		d := next
		next = min(2*next, max)
		if jitter > 0 {
			d = time.Duration(float64(d) * (1 - jitter + 2*jitter*rand.Float64()))
		}
		return d
	}
}

// Sleep waits for d or for ctx to end; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
