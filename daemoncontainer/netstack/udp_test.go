//go:build linux

package netstack

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// roundTrip sends each datagram, then reads as many back and checks that every one came back
// whole and separate.
func roundTrip(t *testing.T, c *gonet.UDPConn, datagrams ...[]byte) {
	t.Helper()
	for _, d := range datagrams {
		if _, err := c.Write(d); err != nil {
			t.Fatalf("write %d bytes: %v", len(d), err)
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<16)
	for i, want := range datagrams {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: got %d bytes, want %d (%.20q)", i, n, len(want), want)
		}
	}
}

// maxDatagram is the largest UDP payload over IPv4.
const maxDatagram = 65535 - 20 - 8

func datagram(size int, fill byte) []byte { return bytes.Repeat([]byte{fill}, size) }

func TestUDPRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		link      linkKind
		mtu       int
		dst       netip.AddrPort
		memEcho   bool
		datagrams [][]byte
	}{
		{
			name: "small datagrams keep their boundaries",
			link: linkFD, dst: netip.MustParseAddrPort("10.96.0.10:53"),
			datagrams: [][]byte{datagram(1, 'a'), datagram(100, 'b'), datagram(1000, 'c')},
		},
		{
			name: "fragmented datagram at MTU 1500",
			link: linkFD, mtu: 1500, dst: netip.MustParseAddrPort("10.96.0.10:53"),
			datagrams: [][]byte{datagram(4000, 'd')},
		},
		{
			name: "largest datagram",
			link: linkMem, dst: netip.MustParseAddrPort("10.96.0.10:53"),
			datagrams: [][]byte{datagram(maxDatagram, 'e')},
		},
		{
			// Loopback IPv4 UDP cannot carry this, so the tunnel end is an in-memory echo.
			name: "largest ipv6 datagram",
			link: linkMem, dst: netip.MustParseAddrPort("[fd00:96::a]:53"), memEcho: true,
			datagrams: [][]byte{datagram(65535-8, 'h')},
		},
		{
			name: "ipv6",
			link: linkFD, dst: netip.MustParseAddrPort("[fd00:96::a]:53"),
			datagrams: [][]byte{datagram(10, 'f'), datagram(20, 'g')},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDialer{udp: serveUDPEcho(t), memEcho: tt.memEcho}
			n := newTestNet(t, Config{Dial: d.dial, MTU: tt.mtu}, tt.link)
			c := n.dialUDP(t, tt.dst)
			roundTrip(t, c, tt.datagrams...)
			if got, want := d.dialed(), []string{"udp " + tt.dst.String()}; len(got) != 1 || got[0] != want[0] {
				t.Errorf("dials = %q, want %q", got, want)
			}
		})
	}
}

// TestUDPFlowPerSource checks that flows are keyed by the 4-tuple: one socket is one flow however
// many datagrams it sends, and a second socket is a second flow.
func TestUDPFlowPerSource(t *testing.T) {
	d := &fakeDialer{udp: serveUDPEcho(t)}
	n := newTestNet(t, Config{Dial: d.dial}, linkFD)
	dst := netip.AddrPortFrom(serviceIP, 53)
	a, b := n.dialUDP(t, dst), n.dialUDP(t, dst)
	roundTrip(t, a, []byte("a1"))
	roundTrip(t, a, []byte("a2"))
	roundTrip(t, b, []byte("b1"))
	roundTrip(t, a, []byte("a3"))
	if got := len(d.dialed()); got != 2 {
		t.Errorf("%d dials, want 2 (one per source socket)", got)
	}
	if got := n.stack.Stats().UDPFlows; got != 2 {
		t.Errorf("Stats().UDPFlows = %d, want 2", got)
	}
}

// TestUDPIdleTimeout checks that an idle flow closes its tunnel conn and that the next datagram
// from the same socket starts a new flow.
func TestUDPIdleTimeout(t *testing.T) {
	d := &fakeDialer{udp: serveUDPEcho(t)}
	n := newTestNet(t, Config{Dial: d.dial, UDPIdleTimeout: 50 * time.Millisecond}, linkFD)
	c := n.dialUDP(t, netip.AddrPortFrom(serviceIP, 53))
	roundTrip(t, c, []byte("first"))
	select {
	case <-d.conn(t, 0).closed:
	case <-time.After(10 * time.Second):
		t.Fatal("idle flow's tunnel conn not closed")
	}
	roundTrip(t, c, []byte("second"))
	if got := len(d.dialed()); got != 2 {
		t.Errorf("%d dials, want 2 (the idle flow ended)", got)
	}
}

// TestUDPDialFailure checks that a failed dial is counted and the flow dropped, and that the next
// datagram tries again.
func TestUDPDialFailure(t *testing.T) {
	d := &fakeDialer{err: errors.New("no route in cluster")}
	n := newTestNet(t, Config{Dial: d.dial}, linkFD)
	c := n.dialUDP(t, netip.AddrPortFrom(serviceIP, 53))
	for want := uint64(1); want <= 2; want++ {
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "dial failure counted", func() bool { return n.stack.Stats().UDPDialFailures == want })
	}
	if got := n.stack.Stats().UDPFlows; got != 0 {
		t.Errorf("Stats().UDPFlows = %d, want 0", got)
	}
}
