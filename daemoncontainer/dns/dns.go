// Package dns serves DNS in the daemon's namespace: cluster names go to the cluster's resolver
// through an Exchanger, every other name to the nameservers the namespace had before.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	miekg "github.com/miekg/dns"
)

// Exchanger resolves a wire-format query in the cluster and returns the wire-format answer.
type Exchanger interface {
	Exchange(ctx context.Context, query []byte) ([]byte, error)
}

// DefaultTimeout bounds one query when Config.Timeout is zero. It stays below the 5s that stub
// resolvers wait by default, so a client gets SERVFAIL instead of timing out and retrying.
const DefaultTimeout = 4 * time.Second

// shutdownTimeout bounds how long Run waits for queries in flight when it stops.
const shutdownTimeout = 2 * time.Second

// Config configures a Server.
type Config struct {
	// ListenAddr is the host:port to serve on, over both UDP and TCP; the daemon uses
	// 127.0.0.1:53. Port 0 picks one free port for both.
	ListenAddr string
	// ClusterDomain is the cluster's DNS domain, such as "cluster.local". Required.
	ClusterDomain string
	// ReverseZones are the cluster's pod and service subnets: reverse lookups of addresses in
	// them go to the cluster.
	ReverseZones []netip.Prefix
	// Upstreams are the host:port nameservers for every other name, tried in order. With none,
	// such names get SERVFAIL.
	Upstreams []string
	// Cluster resolves cluster names. Required.
	Cluster Exchanger
	// Timeout bounds one query, all upstream attempts included; DefaultTimeout when zero.
	Timeout time.Duration
}

// Server is a DNS server on one address over UDP and TCP. The lifecycle is New, Run, Close.
type Server struct {
	log     *slog.Logger
	handler handler
	udp     net.PacketConn
	tcp     net.Listener

	// mu guards closed, ran and the Add side of running, so Run cannot start once Close waits.
	mu      sync.Mutex
	closed  bool
	ran     bool
	running sync.WaitGroup

	quit      chan struct{} // closed by Close, stops Run
	closeOnce sync.Once
}

// New validates cfg and binds the UDP and TCP sockets, so an address in use fails here rather
// than in Run.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		return nil, errors.New("dns: nil logger")
	}
	if cfg.Cluster == nil {
		return nil, errors.New("dns: nil Cluster exchanger")
	}
	r, err := newRouter(cfg.ClusterDomain, cfg.ReverseZones)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	for _, u := range cfg.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			return nil, fmt.Errorf("dns: upstream %q: %w", u, err)
		}
	}
	udp, tcp, err := listen(cfg.ListenAddr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log: log,
		handler: handler{
			log:       log,
			route:     r,
			cluster:   cfg.Cluster,
			upstreams: withoutSelf(cfg.Upstreams, udp.LocalAddr().String(), log),
			timeout:   cfg.Timeout,
		},
		udp:  udp,
		tcp:  tcp,
		quit: make(chan struct{}),
	}
	return s, nil
}

// withoutSelf drops upstreams that are the server itself: a daemon restarted in a namespace whose
// resolv.conf it already rewrote would otherwise forward every query to itself.
func withoutSelf(upstreams []string, self string, log *slog.Logger) []string {
	var out []string
	for _, u := range upstreams {
		if u == self {
			log.Warn("dns: ignoring upstream that is this server", "upstream", u)
			continue
		}
		out = append(out, u)
	}
	return out
}

// listen binds UDP and TCP on the same port; with port 0 the TCP socket takes the port UDP got,
// which another process may hold for TCP, so that case retries a few times.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns: listen address %q: %w", addr, err)
	}
	attempts := 1
	if port == "0" {
		attempts = 5
	}
	for i := 0; ; i++ {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		udpPort := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, udpPort))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if i+1 == attempts {
			return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", net.JoinHostPort(host, udpPort), err)
		}
	}
}

// Addr is the address the server listens on, for UDP and TCP alike.
func (s *Server) Addr() netip.AddrPort {
	return s.udp.LocalAddr().(*net.UDPAddr).AddrPort()
}

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("dns: server closed")

// Run serves until ctx is done or Close is called, then waits up to a few seconds for queries in
// flight. It returns nil after such a stop, or the error that made serving fail. Run may be called
// once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.ran {
		s.mu.Unlock()
		return errors.New("dns: Run called twice")
	}
	s.ran = true
	s.running.Add(1)
	s.mu.Unlock()
	defer s.running.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := s.handler
	h.ctx = ctx
	udp := serve(udpServer(s.udp, &h))
	tcp := serve(&miekg.Server{Listener: s.tcp, Net: "tcp", Handler: &h})

	select {
	case <-ctx.Done():
	case <-s.quit:
	case <-udp.done:
	case <-tcp.done:
	}
	// Cancelling first ends forwards in flight, so the shutdown below does not wait on them.
	cancel()
	return errors.Join(udp.stop(), tcp.stop())
}

// Close stops Run, waits for it, and releases the sockets. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
		s.running.Wait()
		// Run closes the sockets when it stops; these matter when Run never ran.
		s.udp.Close()
		s.tcp.Close()
	})
	return nil
}

// udpServer is the miekg server Run answers UDP with; the fuzz test sends packets through the same.
func udpServer(pc net.PacketConn, h miekg.Handler) *miekg.Server {
	return &miekg.Server{PacketConn: pc, Net: "udp", Handler: h}
}

// serving tracks one miekg server, whose Shutdown fails if called before it started serving.
type serving struct {
	srv     *miekg.Server
	started chan struct{}
	done    chan struct{} // closed when ActivateAndServe returned; err is set then
	err     error
}

func serve(srv *miekg.Server) *serving {
	sv := &serving{srv: srv, started: make(chan struct{}), done: make(chan struct{})}
	srv.NotifyStartedFunc = func() { close(sv.started) }
	go func() {
		defer close(sv.done)
		sv.err = srv.ActivateAndServe()
	}()
	return sv
}

// stop shuts the server down if it started and waits for it; it returns the serve error, if any.
func (sv *serving) stop() error {
	select {
	case <-sv.started:
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = sv.srv.ShutdownContext(ctx)
	case <-sv.done:
	}
	<-sv.done
	if sv.err != nil {
		return fmt.Errorf("dns: serve %s: %w", sv.srv.Net, sv.err)
	}
	return nil
}
