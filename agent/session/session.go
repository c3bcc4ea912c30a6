// Package session keeps the traffic-agent's session with the traffic-manager and passes on what
// the manager tells the agent: which targets are intercepted, and which --to-pod connections to
// accept.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/flow"
)

// Defaults of Config.
const (
	DefaultRPCTimeout  = 10 * time.Second
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
	departTimeout      = 2 * time.Second
	minLease           = 3 * time.Second
	maxRemainRetryWait = time.Second
)

// ErrWatchEnded means the manager ended the watch without an error, as it does when it shuts
// down; the agent watches again.
var ErrWatchEnded = errors.New("traffic-manager ended the watch")

// Manager is the part of the traffic-manager's API that a session uses;
// managerv1.ManagerClient is one.
type Manager interface {
	ArriveAgent(ctx context.Context, in *managerv1.AgentInfo, opts ...grpc.CallOption) (*managerv1.Session, error)
	Remain(ctx context.Context, in *managerv1.SessionRequest, opts ...grpc.CallOption) (*managerv1.RemainResponse, error)
	Depart(ctx context.Context, in *managerv1.SessionRequest, opts ...grpc.CallOption) (*managerv1.DepartResponse, error)
	WatchAgent(ctx context.Context, in *managerv1.SessionRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[managerv1.AgentUpdate], error)
}

// Handler receives what the manager tells the agent. Its methods are called from one goroutine
// at a time and must not block: they hold up the watch.
type Handler interface {
	// Targets is the full state of the agent's targets in the session; it replaces the last one.
	Targets(sessionID string, targets []*managerv1.AgentTarget)
	// Dial asks the agent to accept one --to-pod connection in the session.
	Dial(sessionID string, dial *managerv1.IncomingDial)
	// Lost says that the last state no longer holds: the watch or the session ended. The next
	// watch starts with the full state again.
	Lost()
}

// Config is who the agent is and how patiently it talks to the manager.
type Config struct {
	Info       *managerv1.AgentInfo // required: the agent's pod and workload
	RPCTimeout time.Duration        // bounds arrive and each heartbeat; 0 means DefaultRPCTimeout
	MinBackoff time.Duration        // first wait after a failure; 0 means DefaultMinBackoff
	MaxBackoff time.Duration        // longest wait between retries; 0 means DefaultMaxBackoff
	// TokenFile holds the pod-bound ServiceAccount token shown to the manager on arrival; read
	// anew each time, since the kubelet renews it. Empty: none is shown.
	TokenFile string
}

// Session arrives at the manager, renews the lease, watches the agent's state and arrives again
// whenever the session is lost. New, then Run.
type Session struct {
	cfg Config
	mgr Manager
	h   Handler
	log *slog.Logger
}

// New checks its arguments; Run does the work.
func New(cfg Config, mgr Manager, h Handler, log *slog.Logger) (*Session, error) {
	switch {
	case cfg.Info == nil:
		return nil, errors.New("session: no agent info")
	case mgr == nil:
		return nil, errors.New("session: nil manager")
	case h == nil:
		return nil, errors.New("session: nil handler")
	case log == nil:
		return nil, errors.New("session: nil logger")
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = DefaultRPCTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	return &Session{cfg: cfg, mgr: mgr, h: h, log: log}, nil
}

// Run keeps a session until ctx ends, then departs and returns nil. A manager that cannot be
// reached is retried with backoff for as long as it takes: the agent forwards to the app
// meanwhile, so its pod does not depend on the manager.
func (s *Session) Run(ctx context.Context) error {
	defer s.h.Lost()
	b := s.newBackoff()
	failures := 0
	for {
		sess, err := s.arrive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			// A manager that is down fails the same way every few seconds: say so once, then
			// only at debug level.
			if failures == 1 {
				s.log.Warn("cannot arrive at the traffic-manager; forwarding to the app and retrying", "err", err)
			} else {
				s.log.Debug("arrive failed", "failures", failures, "err", err)
			}
			if !flow.Sleep(ctx, b()) {
				return nil
			}
			continue
		}
		failures = 0
		lease := max(time.Duration(sess.GetLeaseSeconds())*time.Second, minLease)
		s.log.Info("arrived at the traffic-manager", "session", sess.GetSessionId(), "lease", lease)

		start := time.Now()
		s.serve(ctx, sess.GetSessionId(), lease)
		if ctx.Err() != nil {
			s.depart(ctx, sess.GetSessionId())
			return nil
		}
		// A session that held for a while was a success; one lost at once (a manager that
		// forgets sessions as soon as it makes them) must not make the agent spin.
		if time.Since(start) > s.cfg.MaxBackoff {
			b = s.newBackoff()
		}
		if !flow.Sleep(ctx, b()) {
			return nil
		}
	}
}

func (s *Session) arrive(ctx context.Context) (*managerv1.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RPCTimeout)
	defer cancel()
	if s.cfg.TokenFile != "" {
		token, err := os.ReadFile(s.cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("arrive at traffic-manager: the pod's token: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	sess, err := s.mgr.ArriveAgent(ctx, s.cfg.Info)
	if err != nil {
		return nil, fmt.Errorf("arrive at traffic-manager: %w", err)
	}
	if sess.GetSessionId() == "" {
		return nil, errors.New("arrive at traffic-manager: no session id in the answer")
	}
	return sess, nil
}

// depart ends the session at once, so that the manager does not wait out the lease of a pod
// that is going away. It is a courtesy: the lease ends the session anyway.
func (s *Session) depart(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), departTimeout)
	defer cancel()
	if _, err := s.mgr.Depart(ctx, &managerv1.SessionRequest{SessionId: id}); err != nil {
		s.log.Debug("depart", "session", id, "err", err)
		return
	}
	s.log.Info("departed from the traffic-manager", "session", id)
}

// serve heartbeats and watches one session until the manager no longer knows it or ctx ends.
func (s *Session) serve(ctx context.Context, id string, lease time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		defer cancel() // a session the watch found gone needs no more heartbeats
		s.watch(ctx, id)
	}()
	s.remain(ctx, id, lease)
	cancel()
	<-watched
}

// remain renews the lease every lease/3 until the manager answers NotFound or ctx ends. Other
// failures are retried sooner: a broken connection heals through gRPC's reconnect, and the
// session survives if that happens within the lease.
func (s *Session) remain(ctx context.Context, id string, lease time.Duration) {
	interval := lease / 3
	t := time.NewTimer(interval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, min(interval, s.cfg.RPCTimeout))
		_, err := s.mgr.Remain(rctx, &managerv1.SessionRequest{SessionId: id})
		cancel()
		switch {
		case err == nil:
			if failures > 0 {
				s.log.Info("heartbeat succeeds again", "session", id, "failures", failures)
			}
			failures = 0
			t.Reset(interval)
		case ctx.Err() != nil:
			return
		case status.Code(err) == codes.NotFound:
			s.log.Warn("session expired; arriving again", "session", id)
			return
		default:
			failures++
			if failures == 1 {
				s.log.Warn("heartbeat failed; retrying", "session", id, "err", err)
			} else {
				s.log.Debug("heartbeat failed", "session", id, "failures", failures, "err", err)
			}
			t.Reset(min(interval, maxRemainRetryWait))
		}
	}
}

// watch follows the agent's state until the session is gone or ctx ends, watching again after
// every broken stream. Each end of a stream is reported as Lost, so that the agent sends
// connections to the app until the next stream brings the state again.
func (s *Session) watch(ctx context.Context, id string) {
	b := s.newBackoff()
	failures := 0
	for {
		got, err := s.watchOnce(ctx, id)
		s.h.Lost()
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.NotFound {
			s.log.Warn("session expired; arriving again", "session", id)
			return
		}
		if got {
			b, failures = s.newBackoff(), 0
		}
		failures++
		if failures == 1 {
			s.log.Warn("watch ended; watching again", "session", id, "err", err)
		} else {
			s.log.Debug("watch failed", "session", id, "failures", failures, "err", err)
		}
		if !flow.Sleep(ctx, b()) {
			return
		}
	}
}

// watchOnce reads one watch stream until it ends; got reports whether it delivered anything.
func (s *Session) watchOnce(ctx context.Context, id string) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.mgr.WatchAgent(ctx, &managerv1.SessionRequest{SessionId: id})
	if err != nil {
		return false, fmt.Errorf("watch: %w", err)
	}
	for {
		u, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, ErrWatchEnded
		}
		if err != nil {
			return got, fmt.Errorf("watch: %w", err)
		}
		got = true
		s.apply(id, u)
	}
}

// apply passes one update on. An update carries a dial, the full state, or both; one with a dial
// and no targets leaves the state alone, while one without a dial is the state even when it
// lists no targets.
func (s *Session) apply(id string, u *managerv1.AgentUpdate) {
	if d := u.GetDial(); d != nil {
		s.h.Dial(id, d)
		if len(u.GetTargets()) == 0 {
			return
		}
	}
	s.h.Targets(id, u.GetTargets())
}

// newBackoff gives the waits between retries: doubling from min to max, with ±20% jitter so that
// the agents of a workload that lost the manager together do not come back in lockstep.
func (s *Session) newBackoff() func() time.Duration {
	return flow.Backoff(s.cfg.MinBackoff, s.cfg.MaxBackoff, 0.2)
}
