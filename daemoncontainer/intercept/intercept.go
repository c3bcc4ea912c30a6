// Package intercept keeps a daemon's intercepts: it creates them with the traffic-manager, delivers
// the connections they receive to their local destination, and forwards their --to-pod ports.
package intercept

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// Errors of the daemon's own checks, matched with errors.Is. The manager's errors come back as gRPC
// status errors (wrapped), with the manager's code and message.
var (
	ErrNotConnected   = errors.New("no session with the traffic-manager")
	ErrNotFound       = errors.New("no such intercept")
	ErrLocalPortInUse = errors.New("local port already used by another intercept")
	ErrToPodPortInUse = errors.New("cannot listen on the --to-pod port")
	ErrInvalid        = errors.New("invalid intercept")
	ErrBusy           = errors.New("the intercept is being changed by another call")
	ErrClosed         = errors.New("intercepts closed")
)

// Session is what the intercepts need from the session with the traffic-manager.
type Session interface {
	Manager() managerv1.ManagerClient
	// Current is the session ID ("" when there is none) and a channel closed when it changes.
	Current() (id string, changed <-chan struct{})
}

// Config tunes the intercepts. Namespace is required.
type Config struct {
	// Namespace is the connection's namespace, where workloads are intercepted and listed.
	Namespace string
	// DefaultAddress is the destination IP of intercepts that name none: 127.0.0.1 in the
	// daemon's network namespace, where handler containers listen.
	DefaultAddress netip.Addr
	// ListenAddress is where --to-pod ports listen: 127.0.0.1, as the pod's sidecars are reached
	// on its localhost.
	ListenAddress netip.Addr
	// Dial reaches intercept destinations; default a net.Dialer.
	Dial tunnel.DialFunc
	// DialTimeout bounds tunnel dials of --to-pod connections. Default 10s.
	DialTimeout time.Duration
	// AnswerMargin is how long before the caller's deadline the manager must answer CreateIntercept,
	// so that its reason (pod events) reaches the user instead of a bare deadline. Default 2s.
	AnswerMargin time.Duration
	// MaxBackoff caps the wait between attempts to open WatchDials. Default 5s.
	MaxBackoff time.Duration
	// UDPIdleTimeout ends intercepted UDP flows that carry nothing for this long. Default 60s.
	UDPIdleTimeout time.Duration
}

func (c *Config) setDefaults() error {
	if c.Namespace == "" {
		return errors.New("no namespace")
	}
	loopback := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if !c.DefaultAddress.IsValid() {
		c.DefaultAddress = loopback
	}
	if !c.ListenAddress.IsValid() {
		c.ListenAddress = loopback
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.AnswerMargin <= 0 {
		c.AnswerMargin = 2 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	return nil
}

// ToPod is one --to-pod port.
type ToPod struct {
	Port uint16
	UDP  bool
}

func (p ToPod) protocol() managerv1.Protocol { return tunnel.ProtocolOf(p.network()) }

// network is package net's name for the port's protocol.
func (p ToPod) network() string {
	if p.UDP {
		return "udp"
	}
	return "tcp"
}

func (p ToPod) String() string {
	if p.UDP {
		return strconv.Itoa(int(p.Port)) + "/UDP"
	}
	return strconv.Itoa(int(p.Port))
}

// Request asks for an intercept.
type Request struct {
	Name        string
	Workload    string // default Name
	Service     string // optional
	ServicePort string // service port name or number; optional
	// LocalPort is the destination's port; 0 means the intercepted container port.
	LocalPort uint16
	// Address is the destination's IP; the zero value means Config.DefaultAddress.
	Address   netip.Addr
	Mechanism string // "" or "tcp"
	Replace   bool
	ToPod     []ToPod
	// HTTPFilter and Wiretap make a personal intercept or a wiretap; the manager checks them.
	HTTPFilter *managerv1.HttpFilter
	Wiretap    bool
}

func (r Request) validate() error {
	if r.Name == "" {
		return fmt.Errorf("%w: no name", ErrInvalid)
	}
	if r.Mechanism != "" && r.Mechanism != "tcp" {
		return fmt.Errorf("%w: mechanism %q: only tcp is supported", ErrInvalid, r.Mechanism)
	}
	seen := map[ToPod]bool{}
	for _, p := range r.ToPod {
		if p.Port == 0 {
			return fmt.Errorf("%w: --to-pod port 0", ErrInvalid)
		}
		if seen[p] {
			return fmt.Errorf("%w: --to-pod %s given twice", ErrInvalid, p)
		}
		seen[p] = true
	}
	return nil
}

// record is one intercept of this daemon.
type record struct {
	req  Request // as asked, to create it again after the session arrives anew
	info *managerv1.InterceptInfo
	// dest is where connections go (ip:port); it is fixed once the intercept exists.
	dest netip.AddrPort
	// listeners are the --to-pod listeners, by port; they live as long as the record.
	listeners map[ToPod]*listener
}

// Intercepts is the daemon's set of intercepts: New, Run (the standing WatchDials stream), Close.
// Create, Remove, List and Workloads may be called at any time in between.
type Intercepts struct {
	cfg    Config
	sess   Session
	log    *slog.Logger
	server *tunnel.Server

	// ctx is the intercepts' lifetime: accepted connections and --to-pod listeners end with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex // guards the fields below
	// byName and byID index the same records; byID serves the Target of accepted connections.
	byName map[string]*record
	byID   map[string]*record
	// pending holds the destinations of intercepts being created, so that two concurrent creates
	// cannot both claim a local port; an empty AddrPort is a create whose port is not known yet.
	pending map[string]netip.AddrPort
	closed  bool
}

// New returns the intercepts of one session. Nothing runs until Run.
func New(cfg Config, sess Session, log *slog.Logger) (*Intercepts, error) {
	if sess == nil {
		return nil, errors.New("intercept: nil session")
	}
	if log == nil {
		return nil, errors.New("intercept: nil logger")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("intercept: %w", err)
	}
	m := &Intercepts{
		cfg:     cfg,
		sess:    sess,
		log:     log,
		byName:  map[string]*record{},
		byID:    map[string]*record{},
		pending: map[string]netip.AddrPort{},
	}
	server, err := tunnel.NewServer(tunnel.ServerConfig{
		Target:         m.target,
		DialTimeout:    cfg.DialTimeout,
		UDPIdleTimeout: cfg.UDPIdleTimeout,
	}, cfg.Dial, log.With("part", "accept"))
	if err != nil {
		return nil, fmt.Errorf("intercept: %w", err)
	}
	m.server = server
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Close ends every accepted connection and --to-pod listener and waits for them. The intercepts
// themselves end at the manager when the session departs. Close is idempotent.
func (m *Intercepts) Close() error {
	m.mu.Lock()
	m.closed = true
	recs := m.byName
	m.byName, m.byID = map[string]*record{}, map[string]*record{}
	m.mu.Unlock()
	m.cancel()
	for _, r := range recs {
		closeListeners(r.listeners, nil)
	}
	m.wg.Wait()
	return nil
}

// List returns the intercepts, sorted by name. The InterceptInfos are copies.
func (m *Intercepts) List() []*managerv1.InterceptInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*managerv1.InterceptInfo, 0, len(m.byName))
	for _, r := range m.byName {
		out = append(out, proto.CloneOf(r.info))
	}
	slices.SortFunc(out, func(a, b *managerv1.InterceptInfo) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}

// Counters asks the manager for the request counters of the HTTP-filtered intercepts and
// wiretaps, by intercept name; the records keep the InterceptInfo of their creation.
func (m *Intercepts) Counters(ctx context.Context) (map[string]*managerv1.InterceptCounters, error) {
	id, _ := m.sess.Current()
	if id == "" {
		return nil, ErrNotConnected
	}
	resp, err := m.sess.Manager().ListIntercepts(ctx, &managerv1.ListInterceptsRequest{SessionId: id})
	if err != nil {
		return nil, fmt.Errorf("list intercepts: %w", err)
	}
	out := make(map[string]*managerv1.InterceptCounters)
	for _, ic := range resp.GetIntercepts() {
		if c := ic.GetCounters(); c != nil {
			out[ic.GetName()] = c
		}
	}
	return out, nil
}

// Workloads lists the interceptable workloads of namespace ("" is the connection's).
func (m *Intercepts) Workloads(ctx context.Context, namespace string) (*managerv1.ListWorkloadsResponse, error) {
	id, _ := m.sess.Current()
	if id == "" {
		return nil, ErrNotConnected
	}
	if namespace == "" {
		namespace = m.cfg.Namespace
	}
	resp, err := m.sess.Manager().ListWorkloads(ctx, &managerv1.ListWorkloadsRequest{SessionId: id, Namespace: namespace})
	if err != nil {
		return nil, fmt.Errorf("list workloads: %w", err)
	}
	return resp, nil
}

// Create creates the intercept, or changes the one of the same name. The --to-pod listeners are
// opened first, so that a port that cannot be used fails before the cluster changes; a failure
// leaves an existing intercept of the same name as it was.
func (m *Intercepts) Create(ctx context.Context, req Request) (*managerv1.InterceptInfo, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	if req.Workload == "" {
		req.Workload = req.Name
	}
	if !req.Address.IsValid() {
		req.Address = m.cfg.DefaultAddress
	}
	id, _ := m.sess.Current()
	if id == "" {
		return nil, ErrNotConnected
	}
	dest := netip.AddrPortFrom(req.Address, req.LocalPort)
	if req.LocalPort != 0 && m.cfg.ListenAddress == req.Address {
		for _, p := range req.ToPod {
			if p.Port == req.LocalPort && !p.UDP {
				return nil, fmt.Errorf("%w: --to-pod %d is the intercept's own local port", ErrInvalid, p.Port)
			}
		}
	}

	old, err := m.reserve(req.Name, dest, req.ToPod)
	if err != nil {
		return nil, err
	}
	defer m.release(req.Name)

	listeners, added, err := m.openListeners(req.Name, req.ToPod, old)
	if err != nil {
		return nil, err
	}
	info, err := m.create(ctx, id, req, dest)
	if err != nil {
		closeListeners(added, nil)
		if old == nil && gaveUp(ctx, err) {
			// The manager may finish what the caller abandoned (Ctrl-C, a deadline); an intercept
			// this daemon does not know must not stay. Removing one that does not exist is harmless.
			m.spawn(func() { m.removeAtManager(id, req.Name) })
		}
		return nil, err
	}
	if req.LocalPort == 0 {
		// The local port follows the intercepted container port, known only now.
		dest = netip.AddrPortFrom(req.Address, uint16(info.GetTargetPort()))
		if err := m.claimDestination(dest, req.Name, req.ToPod); err != nil {
			closeListeners(added, nil)
			m.undoChange(id, req.Name, old)
			return nil, err
		}
		info.Destination, info.LocalPort = dest.String(), int32(dest.Port())
	}

	rec := &record{req: req, info: info, dest: dest, listeners: listeners}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		closeListeners(added, nil)
		return nil, ErrClosed
	}
	if old != nil {
		delete(m.byID, old.info.GetId())
	}
	m.byName[req.Name] = rec
	m.byID[info.GetId()] = rec
	m.mu.Unlock()
	if old != nil {
		closeListeners(old.listeners, listeners)
	}
	m.log.Info("intercept created", "name", req.Name, "id", info.GetId(), "workload", info.GetWorkload(),
		"destination", dest, "to-pod", len(req.ToPod))
	return proto.CloneOf(info), nil
}

// reserve claims name (and dest, unless its port is 0) for a Create, and returns the existing
// intercept of that name, if any.
func (m *Intercepts) reserve(name string, dest netip.AddrPort, toPod []ToPod) (*record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if _, busy := m.pending[name]; busy {
		return nil, fmt.Errorf("%w: %s", ErrBusy, name)
	}
	if dest.Port() != 0 {
		if err := m.checkDestinationLocked(dest, name, nil); err != nil {
			return nil, err
		}
	}
	// The --to-pod listeners share 127.0.0.1 with the handlers of the other intercepts.
	for _, p := range toPod {
		if p.UDP {
			continue
		}
		listen := netip.AddrPortFrom(m.cfg.ListenAddress, p.Port)
		for other, r := range m.byName {
			if other != name && r.dest == listen {
				return nil, fmt.Errorf("%w %s: it is the local port of intercept %s", ErrToPodPortInUse, listen, other)
			}
		}
	}
	m.pending[name] = dest
	return m.byName[name], nil
}

func (m *Intercepts) release(name string) {
	m.mu.Lock()
	delete(m.pending, name)
	m.mu.Unlock()
}

// claimDestination checks dest for name's pending create and, if it is free, holds it as the
// create's, so that no other create takes it before this one is recorded.
func (m *Intercepts) claimDestination(dest netip.AddrPort, name string, toPod []ToPod) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkDestinationLocked(dest, name, toPod); err != nil {
		return err
	}
	m.pending[name] = dest
	return nil
}

// undoChange undoes at the manager a create that cannot be used: a new intercept goes, and a
// changed one gets its old settings back, so a failed change leaves it as it was. If even that
// fails, the old one is ended here too, so the daemon never shows an intercept the manager lacks.
func (m *Intercepts) undoChange(sessionID, name string, old *record) {
	if old == nil {
		m.removeAtManager(sessionID, name)
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	info, err := m.create(ctx, sessionID, old.req, old.dest)
	if err != nil {
		m.log.Warn("a failed change could not be undone; the intercept ends", "name", old.req.Name, "err", err)
		m.removeAtManager(sessionID, old.req.Name)
		m.forget(old)
		return
	}
	info.Destination, info.LocalPort = old.dest.String(), int32(old.dest.Port())
	m.mu.Lock()
	if m.byName[old.req.Name] == old {
		delete(m.byID, old.info.GetId())
		old.info = info
		m.byID[info.GetId()] = old
	}
	m.mu.Unlock()
}

// checkDestinationLocked refuses a destination that another intercept (existing or being created)
// delivers to, since a connection would not know which workload it came from, and one where another
// intercept's --to-pod listener (or the intercept's own, toPod) already listens.
func (m *Intercepts) checkDestinationLocked(dest netip.AddrPort, name string, toPod []ToPod) error {
	for other, r := range m.byName {
		if other == name {
			continue
		}
		if r.dest == dest {
			return fmt.Errorf("%w: %s is the destination of intercept %s", ErrLocalPortInUse, dest, other)
		}
		if dest.Addr() == m.cfg.ListenAddress && r.listeners[ToPod{Port: dest.Port()}] != nil {
			return fmt.Errorf("%w: %s is a --to-pod port of intercept %s", ErrLocalPortInUse, dest, other)
		}
	}
	for other, d := range m.pending {
		if other != name && d == dest {
			return fmt.Errorf("%w: %s is the destination of intercept %s", ErrLocalPortInUse, dest, other)
		}
	}
	if dest.Addr() == m.cfg.ListenAddress && slices.Contains(toPod, ToPod{Port: dest.Port()}) {
		return fmt.Errorf("%w: %s is one of the intercept's own --to-pod ports", ErrLocalPortInUse, dest)
	}
	return nil
}

// create asks the manager, answering before ctx's deadline by AnswerMargin.
func (m *Intercepts) create(ctx context.Context, sessionID string, req Request, dest netip.AddrPort) (*managerv1.InterceptInfo, error) {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) > 2*m.cfg.AnswerMargin {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-m.cfg.AnswerMargin))
		defer cancel()
	}
	mreq := &managerv1.CreateInterceptRequest{
		SessionId:  sessionID,
		Name:       req.Name,
		Namespace:  m.cfg.Namespace,
		Workload:   req.Workload,
		Service:    req.Service,
		Port:       req.ServicePort,
		Mechanism:  cmp.Or(req.Mechanism, "tcp"),
		Replace:    req.Replace,
		LocalPort:  int32(dest.Port()),
		HttpFilter: req.HTTPFilter,
		Wiretap:    req.Wiretap,
	}
	if dest.Port() != 0 {
		mreq.Destination = dest.String()
	}
	for _, p := range req.ToPod {
		mreq.ToPod = append(mreq.ToPod, &managerv1.ToPod{Port: int32(p.Port), Protocol: p.protocol()})
	}
	info, err := m.sess.Manager().CreateIntercept(ctx, mreq)
	if err != nil {
		return nil, fmt.Errorf("create intercept %s: %w", req.Name, err)
	}
	if info.GetId() == "" {
		return nil, fmt.Errorf("create intercept %s: the traffic-manager returned no intercept id", req.Name)
	}
	return info, nil
}

// gaveUp reports whether a create ended because someone stopped waiting rather than because the
// manager refused.
func gaveUp(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// Remove ends the intercept. It is forgotten locally once the manager no longer has it, which
// includes the manager not knowing it at all (the session arrived anew since).
func (m *Intercepts) Remove(ctx context.Context, name string) error {
	m.mu.Lock()
	rec := m.byName[name]
	m.mu.Unlock()

	id, _ := m.sess.Current()
	if id == "" {
		if rec == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return ErrNotConnected
	}
	_, err := m.sess.Manager().RemoveIntercept(ctx, &managerv1.RemoveInterceptRequest{SessionId: id, Name: name})
	gone := err == nil || status.Code(err) == codes.NotFound
	if gone && rec != nil {
		m.forget(rec)
		m.log.Info("intercept removed", "name", name)
		return nil
	}
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("remove intercept %s: %w", name, err)
	}
	return nil
}

// forget drops a record (if it is still the current one for its name) and closes its listeners.
func (m *Intercepts) forget(rec *record) {
	m.mu.Lock()
	if m.byName[rec.req.Name] == rec {
		delete(m.byName, rec.req.Name)
		delete(m.byID, rec.info.GetId())
	}
	m.mu.Unlock()
	closeListeners(rec.listeners, nil)
}

// removeAtManager undoes a create whose result cannot be used; the error is only logged because the
// caller reports why it gave up.
func (m *Intercepts) removeAtManager(sessionID, name string) {
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	if _, err := m.sess.Manager().RemoveIntercept(ctx, &managerv1.RemoveInterceptRequest{SessionId: sessionID, Name: name}); err != nil {
		m.log.Warn("removing an unusable intercept", "name", name, "err", err)
	}
}

// staleFor reports whether an intercept was made under another session than sessionID.
func (m *Intercepts) staleFor(sessionID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.byName {
		if r.info.GetSessionId() != sessionID {
			return true
		}
	}
	return false
}

// recreate creates the intercepts again under a new session: the manager dropped them with the old
// one. One that cannot be created again (the workload is gone, another client took it) ends here.
func (m *Intercepts) recreate(ctx context.Context, sessionID string) {
	m.mu.Lock()
	var recs []*record
	for name, r := range m.byName {
		if r.info.GetSessionId() == sessionID {
			continue // made under this session already
		}
		if _, busy := m.pending[name]; !busy {
			m.pending[name] = r.dest
			recs = append(recs, r)
		}
	}
	m.mu.Unlock()
	for i, r := range recs {
		if !m.recreateOne(ctx, sessionID, r) {
			for _, rest := range recs[i+1:] {
				m.release(rest.req.Name)
			}
			return
		}
	}
}

// recreateOne creates r again under sessionID; it holds r's name pending until done, so that no
// create of the same name runs meanwhile. It returns false when ctx ended.
func (m *Intercepts) recreateOne(ctx context.Context, sessionID string, r *record) bool {
	defer m.release(r.req.Name)
	info, err := m.create(ctx, sessionID, r.req, r.dest)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		m.log.Warn("intercept lost with the old session; it ended", "name", r.req.Name, "err", err)
		m.forget(r)
		return true
	}
	info.Destination, info.LocalPort = r.dest.String(), int32(r.dest.Port())
	m.mu.Lock()
	current := m.byName[r.req.Name] == r
	if current {
		delete(m.byID, r.info.GetId())
		r.info = info
		m.byID[info.GetId()] = r
	}
	m.mu.Unlock()
	if !current {
		// Left while it was being created again: the manager's new one has no owner here and would
		// take the workload's traffic to nowhere.
		m.removeAtManager(sessionID, r.req.Name)
		return true
	}
	m.log.Info("intercept created again for the new session", "name", r.req.Name, "id", info.GetId())
	return true
}

// target maps an accepted connection's Dial to the intercept's destination.
func (m *Intercepts) target(d *managerv1.Dial) (network, address string, err error) {
	m.mu.Lock()
	r := m.byID[d.GetInterceptId()]
	m.mu.Unlock()
	if r == nil {
		return "", "", fmt.Errorf("no intercept %q in this client", d.GetInterceptId())
	}
	network = tunnel.NetworkOf(d.GetProtocol())
	if network == "" {
		return "", "", fmt.Errorf("protocol %v", d.GetProtocol())
	}
	return network, r.dest.String(), nil
}

// interceptID is the manager's ID of the named intercept, for --to-pod dials.
func (m *Intercepts) interceptID(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.byName[name]; r != nil {
		return r.info.GetId()
	}
	return ""
}
