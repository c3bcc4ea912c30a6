// Package session keeps a client session with the traffic-manager alive through the Kubernetes API
// server.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/flow"
)

// ErrNotConnected is returned by calls that need a session before the first arrival.
var ErrNotConnected = errors.New("no session with the traffic-manager")

// ErrClosed is returned by WaitConnected after Close.
var ErrClosed = errors.New("session closed")

// State is where the session stands; its values are what `teledock status` shows.
type State string

const (
	StateConnecting   State = "connecting"   // no session yet
	StateConnected    State = "connected"    // the last arrival or heartbeat succeeded
	StateReconnecting State = "reconnecting" // a session existed, the last call failed
	StateClosed       State = "closed"       // Close ran
)

// Config says where the traffic-manager is and who this client is.
type Config struct {
	ManagerNamespace string // required
	ManagerService   string // default "traffic-manager"; only used to tell "not installed" from "not ready"
	ManagerSelector  string // pod label selector, default "app.kubernetes.io/name=traffic-manager"
	ManagerPort      int32  // default 8081; a container port named "grpc" takes precedence

	// Who arrives: the connection name, the namespace for DNS search and intercepts, and the host.
	Name      string
	Namespace string
	Hostname  string
	User      string // the user's login name on the host
	Version   string

	// DialOptions are added to the gRPC connection's options, for example the tunnel's window sizes.
	DialOptions []grpc.DialOption
	// RPCTimeout bounds each control call (arrive, heartbeat). Default 10s.
	RPCTimeout time.Duration
	// MaxBackoff caps the wait between failed arrivals. Default 5s.
	MaxBackoff time.Duration

	// Transport picks what carries the tunnels. Default TransportPortForward.
	Transport Transport
	// DirectTimeout bounds the attempt to use the direct port after each arrival. Default 3s.
	DirectTimeout time.Duration
}

func (c *Config) setDefaults() error {
	if c.ManagerNamespace == "" {
		return errors.New("no manager namespace")
	}
	if c.ManagerService == "" {
		c.ManagerService = "traffic-manager"
	}
	if c.ManagerSelector == "" {
		c.ManagerSelector = "app.kubernetes.io/name=traffic-manager"
	}
	if c.ManagerPort == 0 {
		c.ManagerPort = 8081
	}
	if c.RPCTimeout <= 0 {
		c.RPCTimeout = 10 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.Transport == "" {
		c.Transport = TransportPortForward
	}
	if _, err := ParseTransport(string(c.Transport)); err != nil {
		return err
	}
	if c.DirectTimeout <= 0 {
		c.DirectTimeout = 3 * time.Second
	}
	return nil
}

// Status is a snapshot of the session for `teledock status`.
type Status struct {
	State     State
	SessionID string
	// LastError is why the last arrival or heartbeat failed; nil once one succeeds. It wraps
	// ErrNoManager, ErrManagerNotReady or a Kubernetes API error where that is the cause.
	LastError error
	Since     time.Time // when State was entered
	Lease     time.Duration
	Cluster   *managerv1.ClusterInfoResponse
	Manager   *managerv1.VersionInfo
	// Transport is what carries new flows now (TransportPortForward or TransportDirect).
	Transport Transport
	// TransportError says why the direct port is not in use when the config asked to try it; it
	// wraps ErrDirectUnavailable.
	TransportError error
}

// dialer opens connections to the manager; the port-forwarder in production, a pipe in tests.
type dialer interface {
	dial(ctx context.Context, addr string) (net.Conn, error)
	// dialError is the last dial's failure; gRPC keeps only its text.
	dialError() error
	// closeAll breaks open connections so that gRPC dials again.
	closeAll()
}

// Session is one client session with the traffic-manager: New, then Run in a goroutine, then Close.
type Session struct {
	cfg  Config
	log  *slog.Logger
	dial dialer
	// framed opens the TCP flows' framed tunnels on the port-forward; nil in tests with a pipe.
	framed *framedDialer
	conn   *grpc.ClientConn
	mgr    managerv1.ManagerClient

	closing   chan struct{} // closed by Close
	runDone   chan struct{} // closed when Run returns
	connected chan struct{} // closed at the first arrival
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex // guards the fields below
	running bool
	st      Status
	everUp  bool
	// idChanged is closed when st.SessionID stops being current (a new arrival, or Close), and then
	// replaced; see Current.
	idChanged chan struct{}
	// direct is the current arrival's direct connection, nil when there is none; directErr says
	// why not.
	direct    *directConn
	directErr error
}

// New prepares a session that reaches the traffic-manager through port-forwards made with rc. It
// does not connect; Run does.
func New(cfg Config, rc *rest.Config, log *slog.Logger) (*Session, error) {
	if rc == nil {
		return nil, errors.New("session: nil rest config")
	}
	if log == nil {
		return nil, errors.New("session: nil logger")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("session: kubernetes client: %w", err)
	}
	f := newForwarder(kube, rc, cfg, log)
	s, err := newSession(cfg, f, log)
	if err != nil {
		return nil, err
	}
	s.framed = newFramedDialer(f, log.With("part", "framed"))
	return s, nil
}

func newSession(cfg Config, d dialer, log *slog.Logger) (*Session, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	opts := []grpc.DialOption{
		// Plain gRPC is fine here: the bytes ride the TLS connection to the API server, and the
		// kubelet hands them to the manager pod over the pod's loopback.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.dial),
		// gRPC's default reconnect backoff grows to two minutes; a manager restart should be
		// followed within seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.MaxBackoff},
			MinConnectTimeout: 20 * time.Second,
		}),
	}
	opts = append(opts, cfg.DialOptions...)
	conn, err := grpc.NewClient("passthrough:///traffic-manager", opts...)
	if err != nil {
		return nil, fmt.Errorf("session: grpc client: %w", err)
	}
	s := &Session{
		cfg:       cfg,
		log:       log,
		dial:      d,
		conn:      conn,
		closing:   make(chan struct{}),
		runDone:   make(chan struct{}),
		connected: make(chan struct{}),
		idChanged: make(chan struct{}),
		st:        Status{State: StateConnecting, Since: time.Now()},
	}
	s.mgr = routedClient{ManagerClient: managerv1.NewManagerClient(conn), s: s}
	return s, nil
}

// Manager is the client for the manager's API. It stays valid across reconnects; calls made while
// the forward is down fail with codes.Unavailable. Its Tunnel and Accept streams take the direct
// port while that works (see Transport).
func (s *Session) Manager() managerv1.ManagerClient { return s.mgr }

// SessionID is the current session's ID, or "" before the first arrival and after Close.
func (s *Session) SessionID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.SessionID
}

// Current returns the session ID ("" before the first arrival and after Close) and a channel that
// is closed when that ID stops being current: at the next arrival or at Close. Streams bound to a
// session (the intercepts' WatchDials) use it to open again under the new ID instead of polling.
func (s *Session) Current() (id string, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.SessionID, s.idChanged
}

// newIDLocked signals Current's callers that the session ID changed; s.mu must be held.
func (s *Session) newIDLocked() {
	close(s.idChanged)
	s.idChanged = make(chan struct{})
}

// ClusterInfo is what the manager said about the cluster at the last arrival, or nil before it.
func (s *Session) ClusterInfo() *managerv1.ClusterInfoResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Cluster
}

// Status returns a snapshot of the session.
func (s *Session) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Transport, st.TransportError = s.transportLocked()
	return st
}

// WaitConnected blocks until the first arrival, ctx's end or Close.
func (s *Session) WaitConnected(ctx context.Context) error {
	select {
	case <-s.connected:
		return nil
	case <-s.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exchange resolves one DNS query (wire format) with the cluster's resolver; it makes the session a
// dns.Exchanger.
func (s *Session) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	id := s.SessionID()
	if id == "" {
		return nil, ErrNotConnected
	}
	resp, err := s.mgr.LookupDNS(ctx, &managerv1.DNSRequest{SessionId: id, Query: query})
	if err != nil {
		return nil, fmt.Errorf("lookup dns: %w", err)
	}
	return resp.GetAnswer(), nil
}

// Run arrives, keeps the session alive and arrives again whenever it is lost, until ctx ends or
// Close is called. It returns nil then; it is meant to be called once.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("session: Run called twice")
	}
	select {
	case <-s.closing:
		s.mu.Unlock()
		return nil
	default:
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.runDone)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()

	wait := s.newBackoff()
	// Retries repeat the same failure every few seconds; the log says each distinct one once.
	var logged string
	for ctx.Err() == nil {
		if err := s.arrive(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			s.failed(err)
			if msg := err.Error(); msg != logged {
				s.log.Warn("cannot arrive at the traffic-manager; retrying", "err", err)
				logged = msg
			}
			flow.Sleep(ctx, wait())
			continue
		}
		wait, logged = s.newBackoff(), ""
		s.remain(ctx)
	}
	return nil
}

// arrive opens a session: the manager's version first (it is cheap and proves the forward works),
// then the session itself, then what the manager knows about the cluster.
func (s *Session) arrive(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RPCTimeout)
	defer cancel()
	ver, err := s.mgr.Version(ctx, &managerv1.VersionRequest{})
	if err != nil {
		return s.callError("reach traffic-manager", err)
	}
	sess, err := s.mgr.ArriveClient(ctx, &managerv1.ClientInfo{
		Name:      s.cfg.Name,
		Namespace: s.cfg.Namespace,
		Hostname:  s.cfg.Hostname,
		User:      s.cfg.User,
		Version:   s.cfg.Version,
	})
	if err != nil {
		return s.callError("arrive", err)
	}
	ci, err := s.mgr.ClusterInfo(ctx, &managerv1.SessionRequest{SessionId: sess.GetSessionId()})
	if err != nil {
		// The session expires with its lease; departing is a courtesy that may fail the same way.
		s.depart(sess.GetSessionId())
		return s.callError("cluster info", err)
	}

	// The direct port is tried before the session counts as connected, so that a connect reports
	// the transport its flows will take.
	var direct *directConn
	var directErr error
	if s.cfg.Transport != TransportPortForward {
		direct, directErr = s.openDirect(ctx, sess.GetSessionId())
	}

	lease := time.Duration(sess.GetLeaseSeconds()) * time.Second
	if lease < 3*time.Second {
		// A manager that sends no lease still needs heartbeats; three seconds keeps lease/3 sane.
		lease = 3 * time.Second
	}
	s.mu.Lock()
	s.st = Status{
		State:     StateConnected,
		SessionID: sess.GetSessionId(),
		Since:     time.Now(),
		Lease:     lease,
		Cluster:   ci,
		Manager:   ver,
	}
	first := !s.everUp
	s.everUp = true
	s.newIDLocked()
	old := s.direct
	s.direct, s.directErr = direct, directErr
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
	s.log.Info("session arrived", "session", sess.GetSessionId(), "lease", lease, "manager", ver.GetVersion())
	switch {
	case direct != nil:
		s.log.Info("tunnels use the direct port", "addresses", direct.addrs)
	case directErr != nil:
		s.log.Warn("tunnels use the port-forward", "err", directErr)
	}
	if first {
		close(s.connected)
	}
	return nil
}

// remain renews the lease every lease/3 and returns when the manager no longer knows the session
// (NotFound) or ctx ends. Other failures only mark the session as reconnecting: a broken forward
// heals through gRPC's reconnect, and the session survives if that happens within the lease.
func (s *Session) remain(ctx context.Context) {
	st := s.Status()
	interval := st.Lease / 3
	t := time.NewTimer(interval)
	defer t.Stop()
	failures := 0 // consecutive failed heartbeats, to log a streak once
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, min(interval, s.cfg.RPCTimeout))
		_, err := s.mgr.Remain(rctx, &managerv1.SessionRequest{SessionId: st.SessionID})
		cancel()
		switch {
		case err == nil:
			s.healthy()
			failures = 0
			t.Reset(interval)
		case ctx.Err() != nil:
			return
		case status.Code(err) == codes.NotFound:
			s.failed(fmt.Errorf("session %s expired", st.SessionID))
			s.log.Warn("session expired; arriving again", "session", st.SessionID)
			return
		default:
			if status.Code(err) == codes.DeadlineExceeded {
				// gRPC still believes in a transport that does not answer (an API-server
				// connection that died without a reset): break it so that gRPC dials afresh.
				s.dial.closeAll()
			}
			err = s.callError("heartbeat", err)
			s.failed(err)
			failures++
			if failures == 1 {
				s.log.Warn("heartbeat failed; retrying", "session", st.SessionID, "err", err)
			} else {
				s.log.Debug("heartbeat failed", "session", st.SessionID, "failures", failures, "err", err)
			}
			t.Reset(min(interval, time.Second))
		}
	}
}

// callError keeps the cause of an Unavailable call: gRPC reports dial failures as text only, and the
// dialer has the typed error (ErrNoManager, a 403 from the API server).
func (s *Session) callError(op string, err error) error {
	if status.Code(err) == codes.Unavailable {
		if derr := s.dial.dialError(); derr != nil {
			return fmt.Errorf("%s: %w", op, derr)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (s *Session) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := StateConnecting
	if s.everUp {
		next = StateReconnecting
	}
	if s.st.State != next {
		s.st.State = next
		s.st.Since = time.Now()
	}
	s.st.LastError = err
}

func (s *Session) healthy() {
	s.mu.Lock()
	was := s.st.State
	if was != StateConnected {
		s.st.State = StateConnected
		s.st.Since = time.Now()
	}
	s.st.LastError = nil
	s.mu.Unlock()
	if was != StateConnected {
		s.log.Info("session reconnected")
	}
}

// Close stops Run, departs (bounded by a few seconds: an unreachable manager lets the lease expire)
// and closes the connection. It is idempotent.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.closing)
		running := s.running
		s.mu.Unlock()
		if running {
			<-s.runDone
		}
		if id := s.SessionID(); id != "" {
			s.depart(id)
		}
		s.mu.Lock()
		s.st.State, s.st.SessionID, s.st.Since = StateClosed, "", time.Now()
		s.newIDLocked()
		direct := s.direct
		s.direct = nil
		s.mu.Unlock()
		if direct != nil {
			direct.close()
		}
		if s.framed != nil {
			s.framed.close()
		}
		s.closeErr = s.conn.Close()
	})
	return s.closeErr
}

func (s *Session) depart(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := s.mgr.Depart(ctx, &managerv1.SessionRequest{SessionId: id}); err != nil {
		s.log.Warn("depart failed; the session ends with its lease", "session", id, "err", err)
		return
	}
	s.log.Info("session departed", "session", id)
}

// newBackoff returns a function giving the next wait: doubling from 250ms to MaxBackoff.
func (s *Session) newBackoff() func() time.Duration {
	return flow.Backoff(250*time.Millisecond, s.cfg.MaxBackoff, 0)
}
