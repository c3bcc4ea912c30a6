package intercept

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/flow"
	"teledock.dev/teledock/tunnel"
)

// unimplementedBackoff is the wait before asking again a manager that has no WatchDials (one older
// than intercepts): it will not grow one soon, but it may be upgraded.
const unimplementedBackoff = 30 * time.Second

// Run keeps the standing WatchDials stream open until ctx ends or Close: it opens it for the
// current session, opens it again whenever it breaks or the session arrives anew, and then creates
// the intercepts again under the new session. Each IncomingDial is accepted on its own goroutine.
func (m *Intercepts) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)()

	var last string // the session the stream was last opened for
	wait := m.newBackoff()
	var logged string // the last failure logged, so that a repeating one is logged once
	for ctx.Err() == nil {
		id, changed := m.sess.Current()
		if id == "" {
			select {
			case <-changed:
			case <-ctx.Done():
			}
			continue
		}
		// Compared with the intercepts' own sessions, not only with the last one seen here: a
		// session can change before this loop first looks.
		if id != last && m.staleFor(id) {
			m.log.Info("session arrived anew; creating the intercepts again", "session", id)
			m.spawn(func() { m.recreate(ctx, id) })
		}
		last = id

		start := time.Now()
		err := m.watch(ctx, id, changed)
		if ctx.Err() != nil {
			break
		}
		select {
		case <-changed:
			continue // the new session's stream opens at once
		default:
		}
		if time.Since(start) > 10*time.Second {
			wait = m.newBackoff() // it worked for a while: this is a new failure
		}
		d := wait()
		if status.Code(err) == codes.Unimplemented {
			d = unimplementedBackoff
		}
		if msg := errorText(err); msg != logged {
			m.log.Warn("watching for intercepted connections failed; retrying", "session", id, "err", err)
			logged = msg
		}
		select {
		case <-changed:
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return nil
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// watch serves one WatchDials stream until it fails, ctx ends or the session changes.
func (m *Intercepts) watch(ctx context.Context, sessionID string, changed <-chan struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-changed:
			cancel()
		case <-ctx.Done():
		}
	}()
	stream, err := m.sess.Manager().WatchDials(ctx, &managerv1.SessionRequest{SessionId: sessionID})
	if err != nil {
		return err
	}
	for {
		in, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("the traffic-manager ended the stream")
			}
			return err
		}
		if !m.spawn(func() { m.accept(sessionID, in) }) {
			return ErrClosed
		}
	}
}

// accept serves one intercepted connection as its acceptor (tunnel.Server.Accept): the manager
// forwards the agent's Dial, the tunnel server dials the intercept's destination (see target) and
// copies both ways until the connection ends. It lives with the intercepts, not with the
// WatchDials stream that announced it.
func (m *Intercepts) accept(sessionID string, in *managerv1.IncomingDial) {
	open := func(ctx context.Context) (tunnel.AcceptStream, error) { return m.sess.Manager().Accept(ctx) }
	err := m.server.Accept(m.ctx, open, &managerv1.Accept{SessionId: sessionID, ConnId: in.GetConnId()})
	if err != nil {
		m.log.Debug("intercepted connection failed", "conn", in.GetConnId(), "intercept", in.GetInterceptId(), "err", err)
	}
}

// newBackoff returns a function giving the next wait: doubling from 250ms to MaxBackoff.
func (m *Intercepts) newBackoff() func() time.Duration {
	return flow.Backoff(250*time.Millisecond, m.cfg.MaxBackoff, 0)
}
