package netstack

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TUN is a Linux TUN device that carries bare IP packets (IFF_NO_PI). The device is not
// persistent: closing it removes the interface and, with it, every address and route that
// AddAddress and AddRoutes installed, so a crashed daemon leaves nothing behind.
type TUN struct {
	name string
	mtu  int
	fd   int
	// nl is bound to the network namespace OpenTUN ran in, so later calls configure this
	// device even when they run on a thread in another namespace.
	nl    *netlink.Handle
	index int

	closeOnce sync.Once
	closeErr  error
}

// OpenTUN creates the TUN device name (a "%d" in it lets the kernel pick a number) and sets its
// MTU; DefaultMTU is the one to use. It needs CAP_NET_ADMIN and /dev/net/tun. The device stays
// down until AddRoutes.
func OpenTUN(name string, mtu int) (*TUN, error) {
	// The same bounds as Config.MTU: the Stack reading this device must accept its MTU.
	if mtu < 1280 || mtu > maxMTU {
		return nil, fmt.Errorf("tun: MTU %d out of range [1280, %d]", mtu, maxMTU)
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tun: netlink: %w", err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("tun: open /dev/net/tun: %w", err)
	}
	t := &TUN{mtu: mtu, fd: fd, nl: nl}
	if err := t.create(name); err != nil {
		_ = t.Close()
		return nil, err
	}
	return t, nil
}

// create attaches fd to a new interface and sets its MTU.
func (t *TUN) create(name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tun: name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(t.fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("tun: create %q: %w", name, err)
	}
	t.name = ifr.Name()
	link, err := t.nl.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("tun: find %s: %w", t.name, err)
	}
	t.index = link.Attrs().Index
	if err := t.nl.LinkSetMTU(link, t.mtu); err != nil {
		return fmt.Errorf("tun: set MTU %d on %s: %w", t.mtu, t.name, err)
	}
	return nil
}

// Name is the interface name the kernel assigned.
func (t *TUN) Name() string { return t.name }

// FD is the packet file descriptor, for Config.FD. It stays owned by t.
func (t *TUN) FD() int { return t.fd }

// MTU is the MTU OpenTUN set.
func (t *TUN) MTU() int { return t.mtu }

// AddAddress assigns p to the device. The kernel picks the source address of a flow routed into
// the TUN from the namespace's addresses, so this is only needed when the namespace has no other
// address (in a container, eth0's address serves).
func (t *TUN) AddAddress(p netip.Prefix) error {
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
	if err := t.nl.AddrReplace(t.link(), addr); err != nil {
		return fmt.Errorf("tun: address %s on %s: %w", p, t.name, err)
	}
	return nil
}

// AddRoutes sets the device up and routes each prefix into it. It is idempotent (existing routes
// are replaced) and stops at the first failure; an IPv6 prefix fails when IPv6 is disabled in the
// namespace, as Docker does by default.
func (t *TUN) AddRoutes(prefixes ...netip.Prefix) error {
	if err := t.nl.LinkSetUp(t.link()); err != nil {
		return fmt.Errorf("tun: set %s up: %w", t.name, err)
	}
	for _, p := range prefixes {
		if !p.IsValid() {
			return fmt.Errorf("tun: invalid prefix %v", p)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		p = p.Masked()
		r := &netlink.Route{
			LinkIndex: t.index,
			Scope:     netlink.SCOPE_LINK,
			Dst: &net.IPNet{
				IP:   p.Addr().AsSlice(),
				Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
			},
		}
		if err := t.nl.RouteReplace(r); err != nil {
			return fmt.Errorf("tun: route %s via %s: %w", p, t.name, err)
		}
	}
	return nil
}

// link names the device for netlink calls that want a Link; only the index matters to them.
func (t *TUN) link() netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: t.index, Name: t.name}}
}

// Close closes the device, which removes the interface. Close a Stack using FD first. It is
// idempotent.
func (t *TUN) Close() error {
	t.closeOnce.Do(func() {
		if err := unix.Close(t.fd); err != nil {
			t.closeErr = fmt.Errorf("tun: close %s: %w", t.name, err)
		}
		t.nl.Close()
	})
	return t.closeErr
}
