package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func dialT(tb testing.TB, h *harness, network string, addr net.Addr) *Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	c, err := Dial(ctx, h.client, "s1", network, ap)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

func TestTCPEcho(t *testing.T) {
	checkGoroutines(t)
	h := startHarness(t, harnessOpts{})
	lis := listenTCP(t, echo)
	c := dialT(t, h, "tcp", lis.Addr())

	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello", got, err)
	}

	// Both ways at once, larger than a chunk, read through a buffer smaller than a payload so that
	// Read must keep remainders.
	want := make([]byte, 3*ChunkSize+17)
	rand.NewChaCha8([32]byte{1}).Read(want)
	go func() {
		c.Write(want)
		c.CloseWrite()
	}()
	var back bytes.Buffer
	small := make([]byte, 1000)
	for {
		n, err := c.Read(small)
		back.Write(small[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(back.Bytes(), want) {
		t.Fatalf("echoed %d bytes, want the %d written", back.Len(), len(want))
	}
	c.Close()
	waitIdle(t, h.server)
}

func TestTCPHalfClose(t *testing.T) {
	tests := []struct {
		name string
		// dst runs at the destination and returns what it received.
		dst func(c *net.TCPConn) []byte
		// client runs at the client and returns what it read before EOF.
		client     func(t *testing.T, c *Conn) []byte
		wantDst    string
		wantClient string
	}{
		{
			name: "client closes first, destination answers after EOF",
			dst: func(c *net.TCPConn) []byte {
				req, _ := io.ReadAll(c)
				c.Write(append([]byte("got:"), req...))
				c.CloseWrite()
				return req
			},
			client: func(t *testing.T, c *Conn) []byte {
				c.Write([]byte("req"))
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
					t.Errorf("Write after CloseWrite: %v, want net.ErrClosed", err)
				}
				b, err := io.ReadAll(c)
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			wantDst:    "req",
			wantClient: "got:req",
		},
		{
			name: "destination closes first, client writes after EOF",
			dst: func(c *net.TCPConn) []byte {
				c.Write([]byte("banner"))
				c.CloseWrite()
				b, _ := io.ReadAll(c)
				return b
			},
			client: func(t *testing.T, c *Conn) []byte {
				b, err := io.ReadAll(c)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write([]byte("after")); err != nil {
					t.Fatalf("Write after the far end's EOF: %v", err)
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				return b
			},
			wantDst:    "after",
			wantClient: "banner",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHarness(t, harnessOpts{})
			gotDst := make(chan []byte, 1)
			lis := listenTCP(t, func(c *net.TCPConn) { gotDst <- tt.dst(c) })
			c := dialT(t, h, "tcp", lis.Addr())

			if got := string(tt.client(t, c)); got != tt.wantClient {
				t.Errorf("client read %q, want %q", got, tt.wantClient)
			}
			select {
			case got := <-gotDst:
				if string(got) != tt.wantDst {
					t.Errorf("destination read %q, want %q", got, tt.wantDst)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("destination never saw EOF")
			}
			// Both halves are closed: the far end ends the stream by itself, before Close.
			waitIdle(t, h.server)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTCPLargeTransfer(t *testing.T) {
	size := int64(100 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	h := startHarness(t, harnessOpts{})
	src := func() io.Reader { return io.LimitReader(rand.NewChaCha8([32]byte{7}), size) }
	want := sha256.New()
	io.Copy(want, src())
	wantSum := want.Sum(nil)

	t.Run("upload", func(t *testing.T) {
		// The destination hashes what it receives and answers with the sum.
		lis := listenTCP(t, func(c *net.TCPConn) {
			s := sha256.New()
			io.Copy(s, c)
			c.Write(s.Sum(nil))
			c.CloseWrite()
		})
		c := dialT(t, h, "tcp", lis.Addr())
		start := time.Now()
		if _, err := io.Copy(c, src()); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		sum, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		logRate(t, size, time.Since(start))
		if !bytes.Equal(sum, wantSum) {
			t.Fatalf("destination's SHA-256 %x, want %x", sum, wantSum)
		}
	})
	t.Run("download", func(t *testing.T) {
		lis := listenTCP(t, func(c *net.TCPConn) {
			io.Copy(c, src())
			c.CloseWrite()
		})
		c := dialT(t, h, "tcp", lis.Addr())
		c.CloseWrite()
		start := time.Now()
		s := sha256.New()
		n, err := io.Copy(s, c)
		if err != nil {
			t.Fatal(err)
		}
		logRate(t, n, time.Since(start))
		if got := s.Sum(nil); !bytes.Equal(got, wantSum) {
			t.Fatalf("received %d bytes with SHA-256 %x, want %d bytes with %x", n, got, size, wantSum)
		}
	})
}

func logRate(tb testing.TB, n int64, d time.Duration) {
	tb.Helper()
	tb.Logf("%d MiB in %v: %.0f MB/s", n>>20, d.Round(time.Millisecond), float64(n)/d.Seconds()/1e6)
}

// TestThroughputMatrix compares gRPC option sets with and without emulated latency, for a bulk
// transfer and for a short one on a fresh connection (where window ramp-up dominates). It is slow,
// so it only runs with TELEDOCK_TUNNEL_BENCH=1.
func TestThroughputMatrix(t *testing.T) {
	if os.Getenv("TELEDOCK_TUNNEL_BENCH") == "" {
		t.Skip("set TELEDOCK_TUNNEL_BENCH=1 to measure")
	}
	static := func(name string, stream, conn int32) *optionVariant {
		return &optionVariant{
			name:   name,
			client: []grpc.DialOption{grpc.WithInitialWindowSize(stream), grpc.WithInitialConnWindowSize(conn)},
			server: []grpc.ServerOption{grpc.InitialWindowSize(stream), grpc.InitialConnWindowSize(conn)},
		}
	}
	buffers := &optionVariant{
		name:   "bdp+64KiB-buffers",
		client: []grpc.DialOption{grpc.WithReadBufferSize(64 << 10), grpc.WithWriteBufferSize(64 << 10)},
		server: []grpc.ServerOption{grpc.ReadBufferSize(64 << 10), grpc.WriteBufferSize(64 << 10)},
	}
	variants := []*optionVariant{
		{name: "defaults"},
		buffers,
		static("static-4MiB", 4<<20, 16<<20),
		static("static-16MiB", 16<<20, 64<<20),
		nil, // DialOptions/ServerOptions
	}
	sizes := []int64{4 << 20, 100 << 20}
	for _, rtt := range []time.Duration{0, 10 * time.Millisecond, 40 * time.Millisecond} {
		for _, v := range variants {
			name := "tuned"
			if v != nil {
				name = v.name
			}
			t.Run(fmt.Sprintf("rtt=%v/%s", rtt, name), func(t *testing.T) {
				o := harnessOpts{grpc: v}
				if rtt > 0 {
					o.wrap = delayProxy(rtt / 2)
				}
				for _, size := range sizes {
					// A fresh gRPC connection per size, so the short transfer sees initial windows.
					h := startHarness(t, o)
					lis := listenTCP(t, func(c *net.TCPConn) {
						io.Copy(c, io.LimitReader(zeros{}, size))
						c.CloseWrite()
					})
					c := dialT(t, h, "tcp", lis.Addr())
					start := time.Now()
					n, err := io.Copy(io.Discard, c)
					if err != nil || n != size {
						t.Fatalf("copied %d, %v", n, err)
					}
					logRate(t, n, time.Since(start))
				}
			})
		}
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestUDPDatagrams(t *testing.T) {
	checkGoroutines(t)
	h := startHarness(t, harnessOpts{})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			pc.WriteToUDP(buf[:n], from)
		}
	}()
	c := dialT(t, h, "udp", pc.LocalAddr())

	sizes := []int{1, 0, 512, 1400, 9000, MaxDatagram}
	// Write them all before reading any, so that adjacent datagrams could merge if boundaries
	// were lost.
	for i, n := range sizes {
		if _, err := c.Write(bytes.Repeat([]byte{byte(i + 1)}, n)); err != nil {
			t.Fatalf("write %d bytes: %v", n, err)
		}
	}
	buf := make([]byte, 1<<16)
	for i, n := range sizes {
		got, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := bytes.Repeat([]byte{byte(i + 1)}, n); !bytes.Equal(buf[:got], want) {
			t.Errorf("datagram %d: read %d bytes, want %d of %d", i, got, n, i+1)
		}
	}

	// A datagram longer than the buffer is truncated and the rest dropped, as with a UDP socket.
	c.Write([]byte("0123456789"))
	c.Write([]byte("next"))
	if n, _ := c.Read(buf[:4]); string(buf[:n]) != "0123" {
		t.Errorf("truncated read %q, want 0123", buf[:n])
	}
	if n, _ := c.Read(buf); string(buf[:n]) != "next" {
		t.Errorf("read after truncation %q, want next", buf[:n])
	}
	if _, err := c.Write(make([]byte, MaxDatagram+1)); err == nil {
		t.Error("oversized datagram was accepted")
	}
	c.CloseWrite()
	waitIdle(t, h.server)
	c.Close()
}

func TestUDPIdleTimeout(t *testing.T) {
	h := startHarness(t, harnessOpts{cfg: ServerConfig{UDPIdleTimeout: 200 * time.Millisecond}})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c := dialT(t, h, "udp", pc.LocalAddr())
	start := time.Now()
	// Traffic in one direction keeps the flow alive.
	for range 4 {
		c.Write([]byte("ping"))
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
		t.Fatalf("Read on an idle flow: %v, want EOF", err)
	}
	// The last datagram left at 300ms, so the flow may end at 500ms at the earliest.
	if d := time.Since(start); d < 480*time.Millisecond {
		t.Errorf("flow ended after %v despite traffic", d)
	}
	// A client that read the end closes; the server, waiting for that, is done at once.
	c.Close()
	waitIdle(t, h.server)
}

func TestDialErrors(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()

	unreachable := func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
	}
	hang := func(ctx context.Context, network, address string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	deny := func(ctx context.Context, session string) (context.Context, error) {
		return nil, status.Error(codes.Unauthenticated, "no such session")
	}

	tests := []struct {
		name     string
		opts     harnessOpts
		network  string
		dst      netip.AddrPort
		timeout  time.Duration
		want     []error
		wantCode codes.Code
	}{
		{name: "refused", network: "tcp", dst: refusedAddr, want: []error{ErrRefused, syscall.ECONNREFUSED}},
		{name: "unreachable", opts: harnessOpts{dial: unreachable}, network: "tcp", dst: refusedAddr,
			want: []error{ErrUnreachable, syscall.EHOSTUNREACH}},
		{name: "client's deadline", opts: harnessOpts{dial: hang}, network: "tcp", dst: refusedAddr,
			timeout: 300 * time.Millisecond, want: []error{context.DeadlineExceeded}},
		{name: "timeout from the server's default", opts: harnessOpts{dial: hang, cfg: ServerConfig{DialTimeout: 100 * time.Millisecond}},
			network: "udp", dst: refusedAddr, want: []error{ErrTimeout}},
		{name: "bad network", network: "sctp", dst: refusedAddr, want: []error{ErrBadRequest}},
		{name: "unauthenticated", opts: harnessOpts{cfg: ServerConfig{Authorize: deny}}, network: "tcp", dst: refusedAddr,
			wantCode: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHarness(t, tt.opts)
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			c, err := Dial(ctx, h.client, "s1", tt.network, tt.dst)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("Dial error %v does not match %v", err, w)
				}
			}
			if tt.wantCode != codes.OK {
				if got := status.Code(err); got != tt.wantCode {
					t.Errorf("Dial error %v has code %v, want %v", err, got, tt.wantCode)
				}
			}
			waitIdle(t, h.server)
		})
	}
}

func TestCloseResetsStream(t *testing.T) {
	checkGoroutines(t)
	h := startHarness(t, harnessOpts{})
	dstDone := make(chan error, 1)
	lis := listenTCP(t, func(c *net.TCPConn) {
		_, err := io.Copy(io.Discard, c)
		dstDone <- err
	})
	c := dialT(t, h, "tcp", lis.Addr())
	c.Write([]byte("partial"))

	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Close()

	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("pending Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	select {
	case <-dstDone: // the destination's connection was closed
	case <-time.After(5 * time.Second):
		t.Fatal("destination connection still open after the client's Close")
	}
	waitIdle(t, h.server)
}

// TestDialTimeoutPropagates checks that the client's deadline bounds the far end's dial, so a slow
// destination does not hold a dial open after the client gave up.
func TestDialTimeoutPropagates(t *testing.T) {
	got := make(chan time.Duration, 1)
	record := func(ctx context.Context, network, address string) (net.Conn, error) {
		dl, _ := ctx.Deadline()
		got <- time.Until(dl)
		return nil, syscall.ECONNREFUSED
	}
	h := startHarness(t, harnessOpts{dial: record, cfg: ServerConfig{DialTimeout: time.Hour}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := Dial(ctx, h.client, "s1", "tcp", netip.MustParseAddrPort("10.0.0.1:80"))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Dial: %v, want ErrRefused", err)
	}
	if d := <-got; d <= 0 || d > 2*time.Second {
		t.Errorf("far end's dial deadline in %v, want within the client's 2s", d)
	}
}

// TestSessionEndsTunnel checks that a tunnel ends, with the session's cause as its status, when the
// context returned by Authorize ends.
func TestSessionEndsTunnel(t *testing.T) {
	checkGoroutines(t)
	session, endSession := context.WithCancelCause(context.Background())
	defer endSession(nil)
	authorize := func(ctx context.Context, id string) (context.Context, error) { return session, nil }
	h := startHarness(t, harnessOpts{cfg: ServerConfig{Authorize: authorize}})
	lis := listenTCP(t, echo)
	c := dialT(t, h, "tcp", lis.Addr())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	endSession(status.Error(codes.NotFound, "session expired"))
	_, err := io.ReadAll(c)
	if got := status.Code(err); got != codes.NotFound {
		t.Errorf("Read after the session ended: %v (code %v), want NotFound", err, got)
	}
	waitIdle(t, h.server)
}
