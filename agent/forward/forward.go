// Package forward is the traffic-agent's data path: it accepts connections and UDP flows on the
// agent ports and joins each with the destination that a Router picks for it — the app beside
// the agent, or, while intercepted, a tunnel to the developer.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"teledock.dev/teledock/internal/flow"
)

// Defaults of Config.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultUDPIdleTimeout = 60 * time.Second
)

// Target is one agent port and the app port behind it.
type Target struct {
	Name    string // for logs, e.g. "cart/http"
	Network string // "tcp" or "udp"
	Listen  string // host:port to listen on, e.g. ":9900"
	AppPort uint16
	// AgentPort is the port the traffic-manager knows the target by. It is the port of Listen in
	// a pod; it is kept apart so that tests can listen on port 0 and routers still find the
	// target.
	AgentPort uint16
}

// Flow is one TCP connection or UDP flow that arrived on a target.
type Flow struct {
	Target Target
	Source netip.AddrPort // the peer as the agent sees it
}

// Conn is the far end of a flow: a byte stream that can be half-closed. For UDP, each Read and
// Write carries one datagram, and CloseWrite does nothing.
type Conn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Dialer opens the far end of a flow for target.
type Dialer func(ctx context.Context, network string, target Target) (Conn, error)

// Destination is where a flow goes.
type Destination struct {
	Name string // for logs: "app", "intercept <id>", …
	Dial Dialer
	// Serve, when set, takes over an accepted TCP connection instead of Dial and the join: it
	// answers client itself (an HTTP router that picks a destination per request) and returns
	// when it is done with it; the Forwarder closes client afterwards, and at Close, which also
	// cancels ctx. UDP flows always use Dial.
	Serve func(ctx context.Context, client Conn) error
}

// Router picks the destination of each new flow. Flows that are already joined keep their
// destination when the router's answer changes (an intercept starts or ends).
type Router func(Flow) Destination

// App is the destination of a flow that is not intercepted: the app's port on host, which is
// 127.0.0.1 for the agent (the pod shares one network namespace, and connections made inside
// it are not redirected back to the agent).
func App(host string) Destination {
	var d net.Dialer
	return Destination{Name: "app", Dial: func(ctx context.Context, network string, t Target) (Conn, error) {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(host, strconv.Itoa(int(t.AppPort))))
		if err != nil {
			return nil, err
		}
		switch c := c.(type) {
		case *net.TCPConn:
			return c, nil
		case *net.UDPConn:
			return udpConn{c}, nil
		}
		c.Close()
		return nil, fmt.Errorf("dial %s: unexpected %T", network, c)
	}}
}

// udpConn is a connected UDP socket as a Conn.
type udpConn struct{ *net.UDPConn }

func (udpConn) CloseWrite() error { return nil }

// Config is what a Forwarder serves.
type Config struct {
	Targets        []Target
	Router         Router        // nil sends every flow to App("127.0.0.1")
	DialTimeout    time.Duration // 0 means DefaultDialTimeout
	UDPIdleTimeout time.Duration // 0 means DefaultUDPIdleTimeout
}

// Stats counts what a Forwarder does.
type Stats struct {
	Conns      int    // TCP connections joined now
	Flows      int    // UDP flows open now
	DialErrors uint64 // flows whose destination could not be dialed
	UDPDrops   uint64 // datagrams dropped because their flow was not keeping up
}

// Forwarder listens on the targets and joins every flow with its destination.
// New → Start → Close.
type Forwarder struct {
	log *slog.Logger
	cfg Config

	// ctx is cancelled by Close; it ends dials in progress and UDP flows.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Forwarder starts

	joined     atomic.Int64
	dialErrors atomic.Uint64

	mu        sync.Mutex // guards the following
	started   bool
	closed    bool
	listeners []io.Closer
	addrs     []net.Addr
	conns     map[io.Closer]struct{}           // both ends of every joined TCP connection
	udpTables []*flow.UDPTable[netip.AddrPort] // one per UDP target
}

// New checks cfg and returns a Forwarder that serves it once started.
func New(log *slog.Logger, cfg Config) (*Forwarder, error) {
	if log == nil {
		return nil, errors.New("forward: nil logger")
	}
	if len(cfg.Targets) == 0 {
		return nil, errors.New("forward: no targets")
	}
	for _, t := range cfg.Targets {
		if t.Network != "tcp" && t.Network != "udp" {
			return nil, fmt.Errorf("forward: target %s: network %q, want tcp or udp", t.Name, t.Network)
		}
		if t.Listen == "" {
			return nil, fmt.Errorf("forward: target %s: no listen address", t.Name)
		}
	}
	if cfg.Router == nil {
		app := App("127.0.0.1")
		cfg.Router = func(Flow) Destination { return app }
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Forwarder{
		log: log, cfg: cfg, ctx: ctx, cancel: cancel,
		conns: make(map[io.Closer]struct{}),
	}, nil
}

// Start listens on every target and serves them in the background. When one listener fails,
// the ones already open are closed again and the error names the target.
func (f *Forwarder) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started || f.closed {
		return errors.New("forward: already started")
	}
	f.started = true

	type listener struct {
		t   Target
		tcp *net.TCPListener
		udp *net.UDPConn
	}
	var ls []listener
	undo := func() {
		for _, l := range ls {
			if l.tcp != nil {
				l.tcp.Close()
			} else {
				l.udp.Close()
			}
		}
	}
	for _, t := range f.cfg.Targets {
		l := listener{t: t}
		var err error
		if t.Network == "tcp" {
			var nl net.Listener
			if nl, err = net.Listen("tcp", t.Listen); err == nil {
				l.tcp = nl.(*net.TCPListener)
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", t.Listen); err == nil {
				l.udp = pc.(*net.UDPConn)
			}
		}
		if err != nil {
			undo()
			return fmt.Errorf("forward: target %s: %w", t.Name, err)
		}
		ls = append(ls, l)
	}
	for _, l := range ls {
		f.wg.Add(1)
		if l.tcp != nil {
			f.listeners = append(f.listeners, l.tcp)
			f.addrs = append(f.addrs, l.tcp.Addr())
			go f.serveTCP(l.tcp, l.t)
		} else {
			f.listeners = append(f.listeners, l.udp)
			f.addrs = append(f.addrs, l.udp.LocalAddr())
			flows := f.newUDPTable(l.udp, l.t)
			f.udpTables = append(f.udpTables, flows)
			go f.serveUDP(l.udp, l.t, flows)
		}
		f.log.Info("forwarding", "target", l.t.Name, "network", l.t.Network, "listen", f.addrs[len(f.addrs)-1], "app_port", l.t.AppPort)
	}
	return nil
}

// Addrs are the listening addresses, in the order of the targets (useful with port 0).
func (f *Forwarder) Addrs() []net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]net.Addr(nil), f.addrs...)
}

// Stats reports the current counts.
func (f *Forwarder) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Stats{Conns: int(f.joined.Load()), DialErrors: f.dialErrors.Load()}
	for _, t := range f.udpTables {
		ts := t.Stats()
		s.Flows += ts.Open
		s.UDPDrops += ts.Drops
	}
	return s
}

// Close stops listening, ends every connection and flow, and waits for all goroutines. It may
// be called more than once.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.wg.Wait()
		return nil
	}
	f.closed = true
	f.cancel()
	for _, l := range f.listeners {
		l.Close()
	}
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return nil
}

// track registers a connection end so that Close can end it; it reports false, and the caller
// must close c, once the Forwarder is closed.
func (f *Forwarder) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c io.Closer) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// dial opens the destination of a flow within the dial timeout.
func (f *Forwarder) dial(flow Flow) (Conn, Destination, error) {
	dst := f.cfg.Router(flow)
	c, err := f.dialDestination(dst, flow)
	return c, dst, err
}

func (f *Forwarder) dialDestination(dst Destination, flow Flow) (Conn, error) {
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.DialTimeout)
	defer cancel()
	c, err := dst.Dial(ctx, flow.Target.Network, flow.Target)
	if err != nil {
		f.dialErrors.Add(1)
		return nil, fmt.Errorf("dial %s: %w", dst.Name, err)
	}
	return c, nil
}

// addrPort is a's address and port, with an IPv4 peer of a dual-stack listener shown as IPv4
// rather than as ::ffff:a.b.c.d.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
