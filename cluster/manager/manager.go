// Package manager implements the traffic-manager's gRPC API: client and agent sessions with
// leases, cluster facts, DNS forwarding, tunnels into the cluster, intercepts, and the paired
// connections between agents and clients.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/broker"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/internal/flow"
	"teledock.dev/teledock/tunnel"
)

// DefaultLease is how long a session lives without a Remain.
const DefaultLease = 10 * time.Second

// Config is what the manager is told at start-up; main fills it from flags and the environment.
type Config struct {
	Version    string // reported by Version
	AgentImage string // reported by Version; the traffic-agent image the injector uses
	Namespace  string // the manager's own namespace

	// Lease is a session's lifetime without Remain. Zero means DefaultLease.
	Lease time.Duration

	// ResolvConf is the manager pod's /etc/resolv.conf (see ParseResolvConf). Its search path gives
	// the cluster domain, and its nameserver is the DNS fallback when kube-system/kube-dns is absent.
	ResolvConf ResolvConf

	// DNSServer, when set ("ip:port"), overrides the cluster DNS that LookupDNS forwards to.
	DNSServer string

	// Dial dials tunnel destinations. Nil means a net.Dialer.
	Dial tunnel.DialFunc

	// AgentManagerAddress is the host:port at which injected agents reach the manager. Empty
	// means "traffic-manager.<Namespace>:8081", the chart's Service.
	AgentManagerAddress string
	// AcceptTimeout bounds how long a paired connection waits for its acceptor. Zero means
	// broker.DefaultAcceptTimeout.
	AcceptTimeout time.Duration
	// AgentWait bounds the wait for an agent in a CreateIntercept whose request has no deadline.
	// Zero means DefaultAgentWait.
	AgentWait time.Duration
	// Direct, when set, lets clients ask for the direct port (DirectInfo); nil: not installed.
	Direct *DirectConfig

	// ReconcileAfter is how long after start the manager restores the workloads whose agent
	// config still names --replace containers that no intercept claims. Clients of a previous
	// manager get that long to come back and create their intercepts again. Zero means two
	// leases.
	ReconcileAfter time.Duration
}

// DefaultAgentWait is how long CreateIntercept waits for an agent when the client set no deadline.
const DefaultAgentWait = 2 * time.Minute

// Manager serves managerv1.ManagerServer. Create it with New, serve it with gRPC, and call Run to
// expire sessions.
type Manager struct {
	managerv1.UnimplementedManagerServer

	cfg      Config
	k8s      kubernetes.Interface
	log      *slog.Logger
	tunnels  *tunnel.Server
	broker   *broker.Broker
	store    *inject.ConfigMapStore
	configs  *recordingSource // the webhook's view of store
	settings inject.Settings
	changes  notifier // intercepts or agents changed
	// applying serializes planning, storing and rolling out agent configs, so that two requests
	// never interleave their read-modify-write of one workload's config.
	applying chan struct{}
	bg       tasks // restores started when sessions end, reconciles

	mu         sync.Mutex // mu guards the following
	sessions   map[string]*session
	intercepts map[string]*intercept // by id
	tokens     map[tokenKey]*session // direct-port tokens, each a client session's latest
	dnsAddr    netip.AddrPort        // cached cluster DNS address
	dnsUntil   time.Time             // when dnsAddr must be looked up again
}

var _ managerv1.ManagerServer = (*Manager)(nil)

// New returns a Manager that reads the cluster through k8s and logs to log.
func New(cfg Config, k8s kubernetes.Interface, log *slog.Logger) (*Manager, error) {
	if k8s == nil {
		return nil, errors.New("manager: nil kubernetes client")
	}
	if log == nil {
		return nil, errors.New("manager: nil logger")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("manager: no namespace")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.DNSServer != "" {
		if _, err := netip.ParseAddrPort(cfg.DNSServer); err != nil {
			return nil, fmt.Errorf("manager: DNS server: %w", err)
		}
	}
	if cfg.AgentManagerAddress == "" {
		cfg.AgentManagerAddress = "traffic-manager." + cfg.Namespace + ":8081"
	}
	if cfg.Direct != nil {
		if err := cfg.Direct.validate(); err != nil {
			return nil, fmt.Errorf("manager: %w", err)
		}
	}
	if cfg.AgentWait <= 0 {
		cfg.AgentWait = DefaultAgentWait
	}
	if cfg.ReconcileAfter <= 0 {
		cfg.ReconcileAfter = 2 * cfg.Lease
	}
	dial := cfg.Dial
	if dial == nil {
		// Unanswered attempts start over on a new socket after 3 s: a ClusterIP whose pick was
		// a pod that just went away would otherwise hold the dial for its whole deadline.
		dial = flow.Redial((&net.Dialer{}).DialContext, 3*time.Second)
	}
	store, err := inject.NewConfigMapStore(k8s)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	m := &Manager{
		cfg:        cfg,
		k8s:        k8s,
		log:        log,
		store:      store,
		settings:   inject.Settings{AgentImage: cfg.AgentImage, ManagerAddress: cfg.AgentManagerAddress},
		applying:   make(chan struct{}, 1),
		sessions:   make(map[string]*session),
		intercepts: make(map[string]*intercept),
		tokens:     make(map[tokenKey]*session),
	}
	m.configs = newRecordingSource(store, m.planAnnotated, cfg.AgentManagerAddress)
	ts, err := tunnel.NewServer(tunnel.ServerConfig{Authorize: m.authorizeTunnel}, dial, log.With("component", "tunnel"))
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	m.tunnels = ts
	m.broker, err = broker.New(broker.Config{AcceptTimeout: cfg.AcceptTimeout}, log.With("component", "broker"))
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	return m, nil
}

// AgentConfigs is where the agent-injector webhook finds agent configs (see
// inject.NewAdmissionHandler). It notes every lookup, so that a CreateIntercept waiting for an
// agent can tell a webhook that is never called from one that did not inject.
func (m *Manager) AgentConfigs() inject.ConfigSource { return m.configs }

// Run expires sessions whose lease ran out until ctx ends; then it ends every session, which ends
// their tunnels. ReconcileAfter its start, and every six leases after, it restores the workloads
// left replaced by intercepts that no longer exist (a previous manager's, or a failed restore).
func (m *Manager) Run(ctx context.Context) error {
	// Checking four times per lease drops a silent client within 1.25 leases (12.5s for 10s).
	t := time.NewTicker(m.cfg.Lease / 4)
	defer t.Stop()
	reconcile := time.NewTimer(m.cfg.ReconcileAfter)
	defer reconcile.Stop()
	var reconciling atomic.Bool
	for {
		select {
		case <-ctx.Done():
			m.endAll()
			m.bg.close()
			return nil
		case <-t.C:
			m.expire()
		case <-reconcile.C:
			// Again and again, not once: a restore that failed (an API error, a conflict) is
			// retried here, so no workload keeps a --replace placeholder that nobody wants.
			if reconciling.CompareAndSwap(false, true) {
				m.bg.Go(func() {
					defer reconciling.Store(false)
					m.reconcileAll(ctx)
				})
			}
			reconcile.Reset(reconcileEvery(m.cfg.Lease))
		}
	}
}

// reconcileEvery is the period of the reconcile after the first: a few API calls a minute.
func reconcileEvery(lease time.Duration) time.Duration { return 6 * lease }

// Version reports the build and the agent image.
func (m *Manager) Version(context.Context, *managerv1.VersionRequest) (*managerv1.VersionInfo, error) {
	return &managerv1.VersionInfo{Version: m.cfg.Version, AgentImage: m.cfg.AgentImage}, nil
}

func (m *Manager) authorizeTunnel(_ context.Context, id string) (context.Context, error) {
	s, err := m.session(id)
	if err != nil {
		return nil, err
	}
	return s.ctx, nil
}
