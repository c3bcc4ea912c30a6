//go:build linux

package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

func TestTCPEcho(t *testing.T) {
	tests := []struct {
		name string
		dst  netip.AddrPort
		link linkKind
	}{
		{name: "ipv4 fd", dst: netip.MustParseAddrPort("10.96.0.1:80"), link: linkFD},
		{name: "ipv6 fd", dst: netip.MustParseAddrPort("[fd00:96::1]:8080"), link: linkFD},
		{name: "ipv4 mem", dst: netip.MustParseAddrPort("10.96.0.1:80"), link: linkMem},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDialer{tcp: serveTCP(t, echo)}
			n := newTestNet(t, Config{Dial: d.dial}, tt.link)
			c, terr := n.dialTCP(t, tt.dst)
			if terr != nil {
				t.Fatalf("dial %v: %v", tt.dst, terr)
			}
			defer c.Close()

			for _, msg := range []string{"ping", "a somewhat longer second message"} {
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatalf("write: %v", err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatalf("read: %v", err)
				}
				if string(got) != msg {
					t.Errorf("echo = %q, want %q", got, msg)
				}
			}
			if got, want := d.dialed(), []string{"tcp " + tt.dst.String()}; !slices.Equal(got, want) {
				t.Errorf("dials = %q, want %q", got, want)
			}
			if got := n.stack.Stats().TCPFlows; got != 1 {
				t.Errorf("Stats().TCPFlows = %d, want 1", got)
			}
		})
	}
}

// TestTCPHalfClose checks both half-closes: the server's FIN reaches the client while the client
// can still send, and the client's FIN reaches the server, which answers after it.
func TestTCPHalfClose(t *testing.T) {
	fromClient := make(chan string, 1)
	srv := serveTCP(t, func(c *net.TCPConn) {
		c.Write([]byte("hello"))
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("server read: %v", err)
		}
		fromClient <- string(b)
	})
	d := &fakeDialer{tcp: srv}
	n := newTestNet(t, Config{Dial: d.dial}, linkFD)
	c, terr := n.dialTCP(t, netip.AddrPortFrom(serviceIP, 80))
	if terr != nil {
		t.Fatalf("dial: %v", terr)
	}
	defer c.Close()

	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("client read until EOF = %q, %v; want %q, nil", got, err, "hello")
	}
	// The server's write side is closed; ours is still open.
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Fatalf("write after server FIN: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	select {
	case got := <-fromClient:
		if got != "still here" {
			t.Errorf("server got %q, want %q", got, "still here")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server never saw the client's FIN")
	}
	// Both directions are done, so the flow closes the tunnel conn.
	select {
	case <-d.conn(t, 0).closed:
	case <-time.After(10 * time.Second):
		t.Error("tunnel conn not closed after both half-closes")
	}
}

// TestTCPLargeTransfer echoes 20 MiB and compares checksums; it logs the throughput.
func TestTCPLargeTransfer(t *testing.T) {
	for _, link := range []linkKind{linkFD, linkMem} {
		t.Run(link.String(), func(t *testing.T) {
			d := &fakeDialer{tcp: serveTCP(t, echo)}
			n := newTestNet(t, Config{Dial: d.dial}, link)
			c, terr := n.dialTCP(t, netip.AddrPortFrom(serviceIP, 80))
			if terr != nil {
				t.Fatalf("dial: %v", terr)
			}
			defer c.Close()
			checkEcho(t, c, 20<<20)
		})
	}
}

// checkEcho sends size random bytes through an echoing connection, half-closes, and checks that
// exactly the same bytes come back before EOF. It logs the throughput.
func checkEcho(t *testing.T, c interface {
	io.ReadWriter
	CloseWrite() error
	SetDeadline(time.Time) error
}, size int64) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sent := sha256.New()
	writeErr := make(chan error, 1)
	start := time.Now()
	go func() {
		src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), size), sent)
		_, err := io.CopyBuffer(struct{ io.Writer }{c}, src, make([]byte, 64<<10))
		if err == nil {
			err = c.CloseWrite()
		}
		writeErr <- err
	}()
	received := sha256.New()
	got, err := io.CopyBuffer(received, struct{ io.Reader }{c}, make([]byte, 64<<10))
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", got, err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if got != size {
		t.Fatalf("received %d bytes, want %d", got, size)
	}
	if !bytes.Equal(sent.Sum(nil), received.Sum(nil)) {
		t.Fatal("checksum of echoed data differs from what was sent")
	}
	t.Logf("echoed %d MiB in %v: %.0f MB/s each way", size>>20, elapsed.Round(time.Millisecond), float64(size)/elapsed.Seconds()/1e6)
}

// TestTCPFlowEnds covers the ways a flow ends abnormally, as seen by the client.
func TestTCPFlowEnds(t *testing.T) {
	t.Run("dial fails: refused", func(t *testing.T) {
		d := &fakeDialer{err: errors.New("no route in cluster")}
		n := newTestNet(t, Config{Dial: d.dial}, linkFD)
		_, terr := n.dialTCP(t, netip.AddrPortFrom(serviceIP, 81))
		if _, ok := terr.(*tcpip.ErrConnectionRefused); !ok {
			t.Fatalf("dial error = %v, want connection refused", terr)
		}
		if got := n.stack.Stats().TCPDialFailures; got != 1 {
			t.Errorf("Stats().TCPDialFailures = %d, want 1", got)
		}
	})
	t.Run("dial times out: refused", func(t *testing.T) {
		n := newTestNet(t, Config{Dial: func(ctx context.Context, network string, dst netip.AddrPort) (Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, DialTimeout: 50 * time.Millisecond}, linkFD)
		_, terr := n.dialTCP(t, netip.AddrPortFrom(serviceIP, 82))
		if _, ok := terr.(*tcpip.ErrConnectionRefused); !ok {
			t.Fatalf("dial error = %v, want connection refused", terr)
		}
	})
	t.Run("tunnel fails: client reset", func(t *testing.T) {
		received := make(chan struct{})
		d := &fakeDialer{tcp: serveTCP(t, func(c *net.TCPConn) {
			c.Write([]byte("partial"))
			<-received
			c.SetLinger(0) // close with RST: the tunnel's Read fails
		})}
		n := newTestNet(t, Config{Dial: d.dial}, linkFD)
		c, terr := n.dialTCP(t, netip.AddrPortFrom(serviceIP, 80))
		if terr != nil {
			t.Fatalf("dial: %v", terr)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, len("partial"))); err != nil {
			t.Fatalf("read: %v", err)
		}
		close(received)
		if _, err := io.ReadAll(c); err == nil {
			t.Fatal("client read ended with EOF, want a reset")
		}
	})
	t.Run("client resets: tunnel closed", func(t *testing.T) {
		d := &fakeDialer{tcp: serveTCP(t, echo)}
		n := newTestNet(t, Config{Dial: d.dial}, linkFD)
		c, terr := n.dialTCP(t, netip.AddrPortFrom(serviceIP, 80))
		if terr != nil {
			t.Fatalf("dial: %v", terr)
		}
		tc := d.conn(t, 0)
		c.ep.Abort()
		select {
		case <-tc.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("tunnel conn still open after the client reset")
		}
	})
}
