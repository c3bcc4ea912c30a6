package netstack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netns runs functions on one OS thread that has its own, fresh network namespace. Sockets
// created there stay in that namespace whichever thread later uses them.
type netns struct{ run chan func() }

// newNetns skips the test when the process may not create a network namespace.
func newNetns(tb testing.TB) *netns {
	tb.Helper()
	ns := &netns{run: make(chan func())}
	ready := make(chan error)
	go func() {
		// Never unlocked: the thread leaves the process's namespace, so it must exit with this
		// goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for f := range ns.run {
			f()
		}
	}()
	if err := <-ready; err != nil {
		tb.Skipf("cannot create a network namespace (needs CAP_SYS_ADMIN): %v", err)
	}
	tb.Cleanup(func() { close(ns.run) })
	return ns
}

// do runs f in the namespace and waits for it.
func (ns *netns) do(f func()) {
	done := make(chan struct{})
	ns.run <- func() {
		defer close(done)
		f()
	}
	<-done
}

// TestTUN opens a TUN device in a fresh namespace, routes a service range into it and checks
// that the kernel's own TCP and UDP reach a loopback server through a Stack reading the device.
func TestTUN(t *testing.T) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN support: %v", err)
	}
	ns := newNetns(t)
	if _, err := OpenTUN("tdbad%d", 100); err == nil {
		t.Error("OpenTUN with MTU 100 succeeded")
	}

	var tun *TUN
	var err error
	ns.do(func() { tun, err = OpenTUN("tdtest%d", DefaultMTU) })
	if errors.Is(err, unix.EPERM) {
		t.Skipf("opening a TUN device needs CAP_NET_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatalf("OpenTUN: %v", err)
	}
	t.Cleanup(func() { tun.Close() })
	if tun.Name() != "tdtest0" {
		t.Errorf("Name() = %q, want tdtest0", tun.Name())
	}

	// The namespace has no other address, so give the kernel a source address for the flows.
	if err := tun.AddAddress(netip.MustParsePrefix("10.200.0.1/32")); err != nil {
		t.Fatalf("AddAddress: %v", err)
	}
	services := netip.MustParsePrefix("10.96.0.0/12")
	if err := tun.AddRoutes(services, services); err != nil {
		t.Fatalf("AddRoutes (twice the same prefix, which must be idempotent): %v", err)
	}
	if err := tun.AddRoutes(netip.Prefix{}); err == nil {
		t.Error("AddRoutes(invalid prefix) succeeded")
	}
	routes, err := tun.nl.RouteList(tun.link(), netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == services.String() }) {
		t.Errorf("routes on %s = %v, want one to %v", tun.Name(), routes, services)
	}

	d := &fakeDialer{tcp: serveTCP(t, echo), udp: serveUDPEcho(t)}
	s, err := New(Config{FD: tun.FD(), MTU: tun.MTU(), Dial: d.dial}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	t.Run("tcp", func(t *testing.T) {
		var c net.Conn
		ns.do(func() { c, err = net.DialTimeout("tcp", "10.96.0.1:80", 10*time.Second) })
		if err != nil {
			t.Fatalf("dial through the TUN: %v", err)
		}
		defer c.Close()
		checkEcho(t, c.(*net.TCPConn), 20<<20)
	})
	t.Run("udp", func(t *testing.T) {
		var c net.Conn
		ns.do(func() { c, err = net.Dial("udp", "10.96.0.10:53") })
		if err != nil {
			t.Fatalf("dial through the TUN: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		for _, msg := range []string{"query one", "query two"} {
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != msg {
				t.Fatalf("echo = %q, %v; want %q", buf[:n], err, msg)
			}
		}
	})

	// Closing the device removes the interface, and its routes with it.
	s.Close()
	if err := tun.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tun.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ns.do(func() { _, err = netlink.LinkByName(tun.Name()) })
	if err == nil {
		t.Errorf("%s still exists after Close", tun.Name())
	}
}
