// Package podfs reaches the volumes an intercept's traffic-agent serves (SFTP over the daemon's
// Volumes tunnel) for the two client modes: a copy into Docker volumes (Sync) and a live FUSE
// filesystem in the volume plugin (Mount).
package podfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"google.golang.org/grpc"

	"teledock.dev/teledock/agent/agentconfig"
	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/daemon"
	"teledock.dev/teledock/tunnel"
)

// Config says how to reach one intercept's volumes.
type Config struct {
	Daemon    string // host:port of the daemon's API
	Token     string
	Intercept string // the intercept's name
	// DialTimeout bounds reaching the agent's SFTP server (default 5s); OpTimeout bounds one file
	// operation (default 10s). Past either, the operation fails with an I/O error instead of
	// hanging the container that made it.
	DialTimeout time.Duration
	OpTimeout   time.Duration
}

// ErrTimeout is what an operation that ran out of Config.OpTimeout returns.
var ErrTimeout = errors.New("the intercept's volumes did not answer in time")

// Remote is a reconnecting SFTP client for one intercept's volumes: an operation on a broken or
// stuck session closes it, and the next operation dials again.
type Remote struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	sess   *session // nil until dialed, and after a failure
	closed bool
}

type session struct {
	client *sftp.Client
	conn   *tunnel.Conn
	grpc   *grpc.ClientConn
}

func (s *session) close() {
	_ = s.client.Close()
	_ = s.conn.Close()
	_ = s.grpc.Close()
}

// NewRemote checks cfg; nothing is dialed until the first operation.
func NewRemote(cfg Config, log *slog.Logger) (*Remote, error) {
	switch {
	case cfg.Daemon == "" || cfg.Token == "" || cfg.Intercept == "":
		return nil, errors.New("podfs: daemon address, token and intercept are required")
	case log == nil:
		return nil, errors.New("podfs: nil logger")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 10 * time.Second
	}
	return &Remote{cfg: cfg, log: log}, nil
}

// Close ends the session; operations after it fail.
func (r *Remote) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.sess != nil {
		r.sess.close()
		r.sess = nil
	}
	return nil
}

// Do runs op with a client, dialing first if needed (ctx bounds the dial). An op that fails for a reason other than the
// remote file's (a broken session) or that outlives OpTimeout closes the session.
func (r *Remote) Do(ctx context.Context, op func(*sftp.Client) error) error {
	s, err := r.session(ctx)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- op(s.client) }()
	timer := time.NewTimer(r.cfg.OpTimeout)
	defer timer.Stop()
	// ctx does not cut an operation short: FUSE cancels it on any signal to the caller, and Go
	// programs get SIGURG all the time (preemption); the operation is bounded by OpTimeout instead.
	select {
	case err = <-done:
	case <-timer.C:
		r.drop(s, ErrTimeout)
		return ErrTimeout
	}
	if err != nil && brokenSession(err) {
		r.drop(s, err)
	}
	return err
}

// brokenSession tells a dead session from a remote file's own error (not found, denied, EOF).
func brokenSession(err error) bool {
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, sftp.ErrSSHFxNoConnection) ||
		errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

func (r *Remote) drop(s *session, why error) {
	r.mu.Lock()
	if r.sess == s {
		r.sess = nil
	}
	r.mu.Unlock()
	r.log.Info("volumes session dropped", "intercept", r.cfg.Intercept, "why", why)
	s.close()
}

func (r *Remote) session(ctx context.Context) (*session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("podfs: closed")
	}
	if r.sess != nil {
		return r.sess, nil
	}
	// Dialing under the lock makes concurrent operations wait for one dial instead of racing many.
	s, err := dial(ctx, r.cfg)
	if err != nil {
		return nil, err
	}
	r.sess = s
	return s, nil
}

func dial(ctx context.Context, cfg Config) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	gc, err := daemon.Dial(cfg.Daemon, cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("volumes of %s: daemon %s: %w", cfg.Intercept, cfg.Daemon, err)
	}
	api := daemonv1.NewDaemonClient(gc)
	open := func(ctx context.Context) (tunnel.ClientStream, error) {
		s, err := api.Volumes(ctx)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	conn, err := tunnel.DialStream(ctx, open, &managerv1.Dial{InterceptId: cfg.Intercept}, "tcp", agentconfig.VolumesAddr)
	if err != nil {
		_ = gc.Close()
		return nil, fmt.Errorf("volumes of %s: %w", cfg.Intercept, err)
	}
	// The SFTP handshake has no timeout of its own; closing the tunnel ends it.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	client, err := sftp.NewClientPipe(conn, conn, sftp.UseConcurrentReads(true), sftp.UseConcurrentWrites(true),
		// 8 MiB in flight per file (32 KiB packets): a read-ahead is one window, not several.
		sftp.MaxConcurrentRequestsPerFile(256))
	if !stop() || err != nil {
		_ = conn.Close()
		_ = gc.Close()
		if err == nil {
			client.Close()
			err = context.Cause(ctx)
		}
		return nil, fmt.Errorf("volumes of %s: sftp: %w", cfg.Intercept, err)
	}
	return &session{client: client, conn: conn, grpc: gc}, nil
}

// Check makes sure that the remote folder p answers (and is a folder).
func Check(ctx context.Context, r *Remote, p string) error {
	return r.Do(ctx, func(c *sftp.Client) error {
		fi, err := c.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a folder", p)
		}
		return nil
	})
}
