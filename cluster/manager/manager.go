// Package manager implements the traffic-manager's gRPC API: client sessions with leases, cluster
// facts, DNS forwarding and tunnels into the cluster.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	managerv1 "teledock.dev/teledock/api/manager/v1"
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
}

// Manager serves managerv1.ManagerServer. Create it with New, serve it with gRPC, and call Run to
// expire sessions.
type Manager struct {
	managerv1.UnimplementedManagerServer

	cfg     Config
	k8s     kubernetes.Interface
	log     *slog.Logger
	tunnels *tunnel.Server

	mu       sync.Mutex // mu guards the following
	sessions map[string]*session
	dnsAddr  netip.AddrPort // cached cluster DNS address
	dnsUntil time.Time      // when dnsAddr must be looked up again
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
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	m := &Manager{
		cfg:      cfg,
		k8s:      k8s,
		log:      log,
		sessions: make(map[string]*session),
	}
	ts, err := tunnel.NewServer(tunnel.ServerConfig{Authorize: m.authorizeTunnel}, dial, log.With("component", "tunnel"))
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	m.tunnels = ts
	return m, nil
}

// Run expires sessions whose lease ran out until ctx ends; then it ends every session, which ends
// their tunnels.
func (m *Manager) Run(ctx context.Context) error {
	// Checking four times per lease drops a silent client within 1.25 leases (12.5s for 10s).
	t := time.NewTicker(m.cfg.Lease / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.endAll()
			return nil
		case <-t.C:
			m.expire()
		}
	}
}

// Version reports the build and the agent image.
func (m *Manager) Version(context.Context, *managerv1.VersionRequest) (*managerv1.VersionInfo, error) {
	return &managerv1.VersionInfo{Version: m.cfg.Version, AgentImage: m.cfg.AgentImage}, nil
}

// Tunnel carries one TCP connection or UDP flow for a live session; see tunnel.Server for how it
// ends. The session is checked when the Dial arrives, and the tunnel ends with the session.
func (m *Manager) Tunnel(stream managerv1.Manager_TunnelServer) error {
	return m.tunnels.Serve(stream)
}

func (m *Manager) authorizeTunnel(_ context.Context, id string) (context.Context, error) {
	s, err := m.session(id)
	if err != nil {
		return nil, err
	}
	return s.ctx, nil
}
