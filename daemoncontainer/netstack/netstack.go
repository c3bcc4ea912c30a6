// Package netstack terminates the TCP and UDP flows routed into the daemon's TUN device in a gVisor
// netstack and hands each one to a DialFunc that carries it to the cluster.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"teledock.dev/teledock/internal/flow"
)

// Conn is one flow through the tunnel. For UDP every Read and Write is one datagram.
//
// The Stack ends flows by calling Close from another goroutine, so Close must unblock a pending
// Read or Write.
type Conn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// DialFunc opens a flow to dst inside the cluster; network is "tcp" or "udp".
type DialFunc func(ctx context.Context, network string, dst netip.AddrPort) (Conn, error)

// Defaults used when the matching Config field is zero.
const (
	// DefaultMTU is large because packets on the TUN never cross a wire: they go between the
	// kernel and this stack in the same namespace. Per-packet work dominates both sides, so
	// 64 KiB packets move far more data per CPU second than 1500-byte ones: 2-3x through a
	// real TUN (TestTUN) and ~10x between two gVisor stacks (TestTCPLargeTransfer, mem link),
	// measured 2026-11-25. It stays below the fd link's limit, 65408.
	DefaultMTU = 65280
	// DefaultUDPIdleTimeout is long enough for request/response protocols and for keep-alives
	// (which commonly fire every 15-30s), and short enough that abandoned flows do not pin
	// tunnel streams for long. Every datagram, in either direction, restarts it.
	DefaultUDPIdleTimeout = 60 * time.Second
	// DefaultDialTimeout bounds how long a SYN waits for the tunnel. The client kernel retransmits
	// its SYN meanwhile (the forwarder ignores the duplicates), so this only has to beat the
	// client's own connect timeout (~127s with Linux defaults) by a wide margin.
	DefaultDialTimeout = 30 * time.Second
)

// Config configures a Stack. Exactly one of FD and Link must be set.
type Config struct {
	// FD carries raw IP packets, one per read or write, without any header: a TUN device opened
	// with IFF_NO_PI (see TUN.FD) or one end of a SOCK_SEQPACKET socketpair. The Stack makes it
	// non-blocking but does not own it: close it only after Stack.Close returns. Zero means unset
	// (fd 0 is stdin, never a TUN).
	FD int
	// Link replaces FD, for tests that connect stacks in memory.
	Link stack.LinkEndpoint
	// MTU of the link; DefaultMTU when zero. It must match the TUN device's MTU.
	MTU int
	// Dial opens the tunnel side of every flow. Required.
	Dial DialFunc
	// DialTimeout bounds each Dial; DefaultDialTimeout when zero.
	DialTimeout time.Duration
	// UDPIdleTimeout ends a UDP flow that has carried no datagram in either direction for this
	// long; DefaultUDPIdleTimeout when zero.
	UDPIdleTimeout time.Duration
}

// Stats counts flows since New. Every field is monotonic.
type Stats struct {
	TCPFlows        uint64 // TCP connections forwarded to the tunnel
	TCPDialFailures uint64 // SYNs answered with RST because Dial failed
	UDPFlows        uint64 // UDP flows forwarded to the tunnel
	UDPDialFailures uint64 // UDP flows dropped because Dial failed
}

// Stack is a gVisor netstack that accepts every TCP connection and UDP flow routed into its link
// and forwards each through Config.Dial. It knows nothing about how Dial reaches the cluster.
// Other protocols are dropped; in particular ICMP echo requests go unanswered, since a local
// answer would claim the cluster address exists.
type Stack struct {
	log         *slog.Logger
	dial        DialFunc
	dialTimeout time.Duration

	ns  *stack.Stack
	udp *flow.UDPTable[udpPair] // the UDP flows; gVisor tells them apart

	// ctx is cancelled by Close; every flow and every dial derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closed and the Add side of wg, so no flow starts after Close began waiting.
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup

	closeOnce sync.Once

	tcpFlows, tcpDialFailures atomic.Uint64
}

// nicID is the only NIC of the stack.
const nicID tcpip.NICID = 1

// New builds a netstack on the configured link and starts forwarding at once.
func New(cfg Config, log *slog.Logger) (*Stack, error) {
	if log == nil {
		return nil, errors.New("netstack: nil logger")
	}
	if cfg.Dial == nil {
		return nil, errors.New("netstack: nil Dial")
	}
	if (cfg.FD > 0) == (cfg.Link != nil) {
		return nil, errors.New("netstack: set exactly one of FD and Link")
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < header.IPv6MinimumMTU || cfg.MTU > maxMTU {
		return nil, fmt.Errorf("netstack: MTU %d out of range", cfg.MTU)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.UDPIdleTimeout == 0 {
		cfg.UDPIdleTimeout = DefaultUDPIdleTimeout
	}

	ctx, cancel := context.WithCancel(context.Background())
	link := cfg.Link
	if link == nil {
		// Without this log a dead TUN would look like a cluster that stopped answering. The
		// reader also stops with an error when Close removes the NIC; that one is expected.
		stopped := func(err error) {
			if ctx.Err() == nil {
				log.Error("reading the link failed; no more packets", "fd", cfg.FD, "err", err)
			}
		}
		var err error
		if link, err = fdLink(cfg.FD, uint32(cfg.MTU), stopped); err != nil {
			cancel()
			return nil, fmt.Errorf("netstack: link on fd %d: %w", cfg.FD, err)
		}
	}

	ns := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	s := &Stack{
		log:         log,
		dial:        cfg.Dial,
		dialTimeout: cfg.DialTimeout,
		ns:          ns,
		ctx:         ctx,
		cancel:      cancel,
	}
	s.udp = s.newUDPTable(cfg.UDPIdleTimeout, cfg.DialTimeout)
	if err := s.setup(link); err != nil {
		cancel()
		ns.Destroy()
		return nil, err
	}
	return s, nil
}

// setup configures the stack one step per call. The forwarders go in before the NIC: packets
// start arriving the moment the link is attached, and gVisor does not synchronise installing a
// handler with packet delivery.
func (s *Stack) setup(link stack.LinkEndpoint) error {
	if err := tuneTCP(s.ns); err != nil {
		return err
	}
	s.setTCPHandler()
	s.setUDPHandler()
	s.setRoutes()
	return s.setNIC(link)
}

// setNIC attaches the link as the only NIC. Promiscuous mode makes the NIC accept packets for any
// destination address (the TUN only receives what the kernel routed to the cluster), and spoofing
// lets replies leave with that destination as their source, so the stack needs no addresses.
func (s *Stack) setNIC(link stack.LinkEndpoint) error {
	if err := s.ns.CreateNIC(nicID, link); err != nil {
		return fmt.Errorf("netstack: create NIC: %s", err)
	}
	if err := s.ns.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("netstack: promiscuous mode: %s", err)
	}
	if err := s.ns.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("netstack: spoofing: %s", err)
	}
	return nil
}

// setRoutes sends every reply back out of the one NIC.
func (s *Stack) setRoutes() {
	s.ns.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
}

// Stats returns the flow counters.
func (s *Stack) Stats() Stats {
	udp := s.udp.Stats()
	return Stats{
		TCPFlows:        s.tcpFlows.Load(),
		TCPDialFailures: s.tcpDialFailures.Load(),
		UDPFlows:        udp.Flows,
		UDPDialFailures: udp.DialFailures,
	}
}

// Close aborts every flow (local TCP peers get a RST, tunnel conns are closed), stops reading the
// link and waits for all goroutines. It is idempotent and does not close Config.FD.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()

		// Cancelling first aborts pending dials and makes every flow close its conns.
		s.cancel()
		// Close aborts the gVisor endpoints, which unblocks flow goroutines stuck in a read or in
		// a handshake.
		s.ns.Close()
		s.wg.Wait()
		s.udp.Close()
		// Wait removes the NIC, which stops the link's reader goroutines.
		s.ns.Wait()
	})
	return nil
}

// startFlow registers a flow goroutine with Close. It reports false once Close has begun, and the
// caller must then drop the flow.
func (s *Stack) startFlow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// debug logs at debug level; per-flow events only, so the Enabled check keeps the hot path free
// of attribute allocations when debug is off.
func (s *Stack) debug(msg string, args ...any) {
	if s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug(msg, args...)
	}
}

// addrPort converts a gVisor address and port to the DialFunc's type.
func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip, port)
}
