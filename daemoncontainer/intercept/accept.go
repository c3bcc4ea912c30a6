package intercept

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// lingerTimeout bounds how long a finished accepted connection waits for the manager to end the
// stream, so that data still in flight toward the agent is delivered rather than reset.
const lingerTimeout = 5 * time.Second

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
		if last != "" && id != last {
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

// accept opens the Accept stream for one intercepted connection and serves it: the manager sends the
// agent's Dial, the tunnel server dials the intercept's destination (see target) and copies both
// ways until the connection ends (see tunnel.Server for how).
func (m *Intercepts) accept(sessionID string, in *managerv1.IncomingDial) {
	log := m.log.With("conn", in.GetConnId(), "intercept", in.GetInterceptId())
	// The stream lives with the intercepts, not with the WatchDials stream that announced it.
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	stream, err := m.sess.Manager().Accept(ctx)
	if err != nil {
		log.Warn("accept: open stream", "err", err)
		return
	}
	first := &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{
		SessionId: sessionID,
		ConnId:    in.GetConnId(),
	}}}
	if err := stream.Send(first); err != nil {
		// Send reports io.EOF when the stream is already gone; Recv has the status.
		if _, rerr := stream.Recv(); rerr != nil {
			err = rerr
		}
		log.Warn("accept: send accept", "err", err)
		return
	}
	if err := m.server.Serve(stream); err != nil {
		// cancel (deferred) resets the stream.
		log.Debug("intercepted connection failed", "err", err)
		return
	}
	// Done cleanly: end our side and wait for the manager's status before cancelling.
	_ = stream.CloseSend()
	t := time.AfterFunc(lingerTimeout, cancel)
	defer t.Stop()
	for {
		if _, err := stream.Recv(); err != nil {
			if log.Enabled(ctx, slog.LevelDebug) && !errors.Is(err, io.EOF) {
				log.Debug("intercepted connection ended", "err", err)
			}
			return
		}
	}
}

// newBackoff returns a function giving the next wait: doubling from 250ms to MaxBackoff.
func (m *Intercepts) newBackoff() func() time.Duration {
	next := 250 * time.Millisecond
	return func() time.Duration {
		d := next
		next = min(2*next, m.cfg.MaxBackoff)
		return d
	}
}
