// Package daemon serves the daemon container's API (api/daemon/v1) to the teledock CLI.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// Session is what the daemon needs from the session with the traffic-manager.
type Session interface {
	Info() SessionInfo
	// Close departs and ends the session.
	Close() error
}

// SessionInfo is the session as the daemon reports it.
type SessionInfo struct {
	State     string // "connecting", "connected", "reconnecting", "closed"
	ID        string
	LastError string
	ErrorCode daemonv1.ErrorCode
	Cluster   *managerv1.ClusterInfoResponse
	Manager   *managerv1.VersionInfo
	// Transport is what carries the tunnels ("port-forward", "direct") while connected;
	// TransportError says why not the direct port when it was asked for.
	Transport      string
	TransportError string
}

// NetworkInfo is what the running network (TUN, routes, DNS server) reports.
type NetworkInfo struct {
	ResolverAddress string // where handler containers send DNS queries
	SearchPath      []string
	Timeout         time.Duration
}

// Config describes the connection the daemon serves and where its API listens.
type Config struct {
	ListenAddr string // e.g. ":7777"; the container publishes it on the host's loopback only
	Token      string // required; callers send "authorization: Bearer <Token>"
	Version    string
	// AllowPeer says whether a peer address may connect to the API (nil: any); other connections
	// are closed as they are accepted.
	AllowPeer func(netip.Addr) bool

	Name             string // connection name
	KubeContext      string
	Server           string // the API server URL as the user knows it (before any rewriting)
	Namespace        string
	ManagerNamespace string
}

// Daemon is the API server: New (which listens), Run, Close.
type Daemon struct {
	daemonv1.UnimplementedDaemonServer

	cfg  Config
	sess Session
	icpt Intercepts
	log  *slog.Logger
	lis  net.Listener
	srv  *grpc.Server

	quit     chan struct{}
	quitOnce sync.Once
	// stopping ends the calls that would otherwise never end (holds), so that a graceful stop is.
	stopping     chan struct{}
	stoppingOnce sync.Once
	holds        *holds

	mu         sync.Mutex // guards the fields below
	network    *NetworkInfo
	networkErr error
}

// New listens on cfg.ListenAddr; serving starts with Run.
func New(cfg Config, sess Session, icpt Intercepts, log *slog.Logger) (*Daemon, error) {
	switch {
	case cfg.Token == "":
		return nil, errors.New("daemon: empty token")
	case sess == nil:
		return nil, errors.New("daemon: nil session")
	case icpt == nil:
		return nil, errors.New("daemon: nil intercepts")
	case log == nil:
		return nil, errors.New("daemon: nil logger")
	}
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("daemon: listen: %w", err)
	}
	if cfg.AllowPeer != nil {
		lis = &peerFilter{Listener: lis, allow: cfg.AllowPeer, log: log}
	}
	auth := tokenAuth{token: []byte(cfg.Token)}
	d := &Daemon{
		cfg:  cfg,
		sess: sess,
		icpt: icpt,
		log:  log,
		lis:  lis,
		srv:  grpc.NewServer(grpc.UnaryInterceptor(auth.unary), grpc.StreamInterceptor(auth.stream)),
		quit: make(chan struct{}),

		stopping: make(chan struct{}),
	}
	d.holds = newHolds(icpt, log.With("part", "holds"), d.stopping)
	daemonv1.RegisterDaemonServer(d.srv, d)
	return d, nil
}

// Addr is the address the API listens on.
func (d *Daemon) Addr() net.Addr { return d.lis.Addr() }

// Quitting is closed once a Quit call has departed; the process should then exit.
func (d *Daemon) Quitting() <-chan struct{} { return d.quit }

// SetNetwork records the network's state once it runs, or why it could not start.
func (d *Daemon) SetNetwork(info *NetworkInfo, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.network, d.networkErr = info, err
}

// Run serves until ctx ends, then stops, letting calls in flight (a Quit's answer) finish.
func (d *Daemon) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- d.srv.Serve(d.lis) }()
	select {
	case err := <-errc:
		// Serve returns nil after Close.
		if err != nil {
			return fmt.Errorf("daemon: serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	d.stop()
	<-errc
	return nil
}

// Close stops the server at once. Run returns after it.
func (d *Daemon) Close() error {
	d.stoppingOnce.Do(func() { close(d.stopping) })
	d.srv.Stop()
	return nil
}

// stop stops gracefully but gives up after a few seconds: a CLI stuck in a call must not keep the
// container alive.
func (d *Daemon) stop() {
	d.stoppingOnce.Do(func() { close(d.stopping) })
	done := make(chan struct{})
	go func() {
		d.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		d.srv.Stop()
		<-done
	}
}

func (d *Daemon) Status(ctx context.Context, _ *daemonv1.StatusRequest) (*daemonv1.StatusResponse, error) {
	info := d.sess.Info()
	d.mu.Lock()
	network, networkErr := d.network, d.networkErr
	d.mu.Unlock()
	resp := statusResponse(d.cfg, info, network, networkErr)
	perRequest := false
	for _, ic := range d.icpt.List() {
		resp.InterceptList = append(resp.InterceptList, &daemonv1.InterceptSummary{
			Name: ic.GetName(), Owner: ic.GetClient(), HttpFilter: ic.GetHttpFilter(), Wiretap: ic.GetWiretap(),
		})
		perRequest = perRequest || ic.GetWiretap() || ic.GetHttpFilter() != ""
	}
	resp.Intercepts = int32(len(resp.InterceptList))
	if perRequest {
		// The counters live at the manager; a status that cannot get them quickly goes without.
		cctx, cancel := context.WithTimeout(ctx, statusCountersTimeout)
		counters, err := d.icpt.Counters(cctx)
		cancel()
		if err != nil {
			d.log.Debug("status without request counters", "err", err)
		}
		for _, s := range resp.InterceptList {
			s.Counters = counters[s.GetName()]
		}
	}
	return resp, nil
}

// statusCountersTimeout bounds the manager call with which Status gets the request counters.
const statusCountersTimeout = 2 * time.Second

func statusResponse(cfg Config, info SessionInfo, network *NetworkInfo, networkErr error) *daemonv1.StatusResponse {
	resp := &daemonv1.StatusResponse{
		Version:          cfg.Version,
		ConnectionName:   cfg.Name,
		KubeContext:      cfg.KubeContext,
		Server:           cfg.Server,
		Namespace:        cfg.Namespace,
		ManagerNamespace: cfg.ManagerNamespace,
		SessionState:     info.State,
		SessionId:        info.ID,
		LastError:        info.LastError,
		LastErrorCode:    info.ErrorCode,
		PodSubnets:       info.Cluster.GetPodSubnets(),
		ServiceSubnets:   info.Cluster.GetServiceSubnets(),
		NetworkReady:     network != nil && networkErr == nil,
		Transport:        info.Transport,
		TransportError:   info.TransportError,
	}
	if networkErr != nil {
		resp.NetworkError = networkErr.Error()
	}
	if info.Manager != nil {
		resp.Manager = &daemonv1.ManagerStatus{
			Connected:  info.State == "connected",
			Version:    info.Manager.GetVersion(),
			AgentImage: info.Manager.GetAgentImage(),
		}
	}
	if info.Cluster != nil || network != nil {
		resp.Dns = &daemonv1.DNSStatus{
			ClusterDomain: info.Cluster.GetClusterDomain(),
			DnsIp:         info.Cluster.GetDnsIp(),
		}
		if network != nil {
			resp.Dns.ResolverAddress = network.ResolverAddress
			resp.Dns.SearchPath = network.SearchPath
			resp.Dns.TimeoutMs = int32(network.Timeout / time.Millisecond)
		}
	}
	return resp
}

// Quit departs and then lets the process exit (see Quitting). The container itself is removed by
// the CLI.
func (d *Daemon) Quit(context.Context, *daemonv1.QuitRequest) (*daemonv1.QuitResponse, error) {
	d.log.Info("quit requested")
	if err := d.sess.Close(); err != nil {
		d.log.Warn("closing the session", "err", err)
	}
	d.quitOnce.Do(func() { close(d.quit) })
	return &daemonv1.QuitResponse{}, nil
}
