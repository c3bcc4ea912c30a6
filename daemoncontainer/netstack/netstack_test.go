//go:build linux

package netstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Addresses of the test network: the client stack owns clientIP and reaches everything else
// through the Stack under test, as a container reaches the cluster through the TUN.
var (
	clientIP  = netip.MustParseAddr("10.1.0.2")
	clientIP6 = netip.MustParseAddr("fd00::2")
	serviceIP = netip.MustParseAddr("10.96.0.1")
)

// testLogger logs through t.Logf, at debug level so a failing test shows the flow's story.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Logf("%s", p)
	return len(p), nil
}

// testNet is a client gVisor stack linked to a Stack under test, as a container's kernel is linked
// to the daemon's stack by the TUN.
type testNet struct {
	client *stack.Stack
	stack  *Stack
}

// linkKind picks how the two stacks of a testNet are connected.
type linkKind int

const (
	// linkFD is a SOCK_SEQPACKET socketpair passed as Config.FD, the production code path: one
	// bare IP packet per message, like a TUN. The kernel queues at most
	// net.unix.max_dgram_qlen (default 10) messages per socket and fdbased drops a packet when
	// the queue is full, so TCP throughput over it measures loss recovery, not the stack.
	linkFD linkKind = iota
	// linkMem is gVisor's in-memory pipe link passed as Config.Link: lossless, for throughput.
	linkMem
)

func (k linkKind) String() string { return [...]string{"fd", "mem"}[k] }

// newTestNet builds the pair; cfg.Dial must be set, the link is filled in.
func newTestNet(tb testing.TB, cfg Config, kind linkKind) *testNet {
	tb.Helper()
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	var clientLink stack.LinkEndpoint
	switch kind {
	case linkFD:
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Fatalf("socketpair: %v", err)
		}
		tb.Cleanup(func() {
			unix.Close(fds[0])
			unix.Close(fds[1])
		})
		if clientLink, err = fdbased.New(&fdbased.Options{FDs: []int{fds[0]}, MTU: uint32(cfg.MTU)}); err != nil {
			tb.Fatalf("client link: %v", err)
		}
		cfg.FD = fds[1]
	case linkMem:
		clientLink, cfg.Link = pipe.New("", "", uint32(cfg.MTU))
	}
	client := newClientStack(tb, clientLink)
	s, err := New(cfg, testLogger(tb))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return &testNet{client: client, stack: s}
}

// newClientStack plays the kernel of a container joined to the daemon's namespace.
func newClientStack(tb testing.TB, link stack.LinkEndpoint) *stack.Stack {
	tb.Helper()
	ns := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	tb.Cleanup(ns.Destroy)
	if err := tuneTCP(ns); err != nil {
		tb.Fatal(err)
	}
	if err := ns.CreateNIC(nicID, link); err != nil {
		tb.Fatalf("client NIC: %v", err)
	}
	for _, a := range []netip.Addr{clientIP, clientIP6} {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			tb.Fatalf("client address %v: %v", a, err)
		}
	}
	(&Stack{ns: ns}).setRoutes()
	return ns
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}

// dialTCP connects from the client stack and returns gVisor's own error, so a test can tell a
// refused connection from a timeout without matching strings.
func (n *testNet) dialTCP(tb testing.TB, dst netip.AddrPort) (*clientConn, tcpip.Error) {
	tb.Helper()
	addr, proto := fullAddr(dst)
	var wq waiter.Queue
	ep, err := n.client.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if err != nil {
		tb.Fatalf("client endpoint: %v", err)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	err = ep.Connect(addr)
	if _, started := err.(*tcpip.ErrConnectStarted); started {
		select {
		case <-notify:
		case <-time.After(10 * time.Second):
			ep.Close()
			tb.Fatalf("dial %v: no answer within 10s", dst)
		}
		err = ep.LastError()
	}
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &clientConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}, nil
}

// clientConn keeps the endpoint so a test can reset the connection.
type clientConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
}

// dialUDP opens a connected UDP socket on the client stack.
func (n *testNet) dialUDP(tb testing.TB, dst netip.AddrPort) *gonet.UDPConn {
	tb.Helper()
	addr, proto := fullAddr(dst)
	c, err := gonet.DialUDP(n.client, nil, &addr, proto)
	if err != nil {
		tb.Fatalf("client dial udp %v: %v", dst, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// fakeDialer stands in for the gRPC tunnel: it records each dial and connects to a real loopback
// server instead of the cluster.
type fakeDialer struct {
	tcp, udp netip.AddrPort // loopback servers; zero means "refuse"
	err      error          // returned by every dial when set
	memEcho  bool           // UDP flows get an in-memory echo instead of a loopback socket

	mu    sync.Mutex
	dials []string // "network dst" of every dial, in order
	conns []*trackedConn
}

func (d *fakeDialer) dial(ctx context.Context, network string, dst netip.AddrPort) (Conn, error) {
	d.mu.Lock()
	d.dials = append(d.dials, network+" "+dst.String())
	d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	if network == "udp" && d.memEcho {
		tc := &trackedConn{Conn: newDatagramEcho(), closed: make(chan struct{})}
		d.mu.Lock()
		d.conns = append(d.conns, tc)
		d.mu.Unlock()
		return tc, nil
	}
	target := d.tcp
	if network == "udp" {
		target = d.udp
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, target.String())
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{closed: make(chan struct{})}
	switch c := c.(type) {
	case *net.TCPConn:
		tc.Conn = c
	case *net.UDPConn:
		tc.Conn = udpConn{c}
	}
	d.mu.Lock()
	d.conns = append(d.conns, tc)
	d.mu.Unlock()
	return tc, nil
}

func (d *fakeDialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dials...)
}

// conn returns the i-th tunnel conn, waiting for it to exist.
func (d *fakeDialer) conn(tb testing.TB, i int) *trackedConn {
	tb.Helper()
	var c *trackedConn
	waitFor(tb, "tunnel conn dialed", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		if len(d.conns) > i {
			c = d.conns[i]
		}
		return c != nil
	})
	return c
}

// udpConn gives a connected *net.UDPConn the Conn method set; a datagram flow has no half-close.
type udpConn struct{ *net.UDPConn }

func (udpConn) CloseWrite() error { return nil }

// datagramEcho is an in-memory tunnel end that returns every datagram written to it. Unlike a
// loopback IPv4 socket it carries the largest IPv6 payloads.
type datagramEcho struct {
	queue chan []byte
	done  chan struct{}
	once  sync.Once
}

func newDatagramEcho() *datagramEcho {
	return &datagramEcho{queue: make(chan []byte, 16), done: make(chan struct{})}
}

func (e *datagramEcho) Write(b []byte) (int, error) {
	select {
	case e.queue <- slices.Clone(b):
		return len(b), nil
	case <-e.done:
		return 0, net.ErrClosed
	}
}

func (e *datagramEcho) Read(b []byte) (int, error) {
	select {
	case d := <-e.queue:
		return copy(b, d), nil
	case <-e.done:
		return 0, io.EOF
	}
}

func (e *datagramEcho) Close() error {
	e.once.Do(func() { close(e.done) })
	return nil
}

func (e *datagramEcho) CloseWrite() error { return nil }

// trackedConn reports when the Stack closes the tunnel side of a flow.
type trackedConn struct {
	Conn
	once   sync.Once
	closed chan struct{}
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// waitFor polls cond until it holds or 10s pass; it never sleeps for readiness blindly.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serveTCP runs handle for every connection to a loopback listener until the test ends.
func serveTCP(tb testing.TB, handle func(*net.TCPConn)) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// serveUDPEcho echoes every datagram to its sender until the test ends.
func serveUDPEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() {
		pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := pc.WriteToUDPAddrPort(buf[:n], from); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// echo copies a connection back to itself and then half-closes, so EOF travels both ways.
func echo(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

func TestNewValidatesConfig(t *testing.T) {
	dial := func(context.Context, string, netip.AddrPort) (Conn, error) { return nil, errors.New("unused") }
	tests := []struct {
		name string
		cfg  Config
		log  *slog.Logger
	}{
		{name: "nil logger", cfg: Config{FD: 3, Dial: dial}},
		{name: "nil dial", cfg: Config{FD: 3}, log: testLogger(t)},
		{name: "no link", cfg: Config{Dial: dial}, log: testLogger(t)},
		{name: "MTU too small", cfg: Config{FD: 3, Dial: dial, MTU: 500}, log: testLogger(t)},
		{name: "MTU too large", cfg: Config{FD: 3, Dial: dial, MTU: 70000}, log: testLogger(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg, tt.log)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded, want error")
			}
		})
	}
}

// TestCloseLeavesNoGoroutines checks that Close waits for flows: after Close returns with flows
// open, the goroutine count comes back to where it was.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("run", func(t *testing.T) {
		d := &fakeDialer{tcp: serveTCP(t, echo), udp: serveUDPEcho(t)}
		n := newTestNet(t, Config{Dial: d.dial}, linkFD)
		c, terr := n.dialTCP(t, netip.AddrPortFrom(serviceIP, 80))
		if terr != nil {
			t.Fatalf("dial: %v", terr)
		}
		defer c.Close()
		u := n.dialUDP(t, netip.AddrPortFrom(serviceIP, 53))
		if _, err := u.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		d.conn(t, 1)

		n.stack.Close()
		n.stack.Close() // idempotent
		// The client saw its connection aborted.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("client read after Close = %v, want a reset", err)
		}
		for i := range 2 {
			select {
			case <-d.conn(t, i).closed:
			default:
				t.Errorf("tunnel conn %d still open after Close", i)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
