package flow

import (
	"context"
	"errors"
	"net"
	"time"
)

// Redial makes TCP dials that go unanswered try again on a new socket, after first, then twice as
// long each time, until ctx ends. A Service's ClusterIP picks its pod when the connection's first
// packet passes the node's rules; a pod that just went away (a rollout) swallows the SYNs of the
// connections that picked it, and the kernel retries those on the same, already translated, flow
// until the whole dial deadline is gone. A new socket is a new pick.
func Redial(dial func(ctx context.Context, network, address string) (net.Conn, error), first time.Duration) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if network != "tcp" && network != "tcp4" && network != "tcp6" {
			return dial(ctx, network, address)
		}
		for wait := first; ; wait *= 2 {
			actx, cancel := context.WithTimeout(ctx, wait)
			c, err := dial(actx, network, address)
			cancel()
			if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
				return c, err
			}
		}
	}
}
