package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// rawServer serves raw tunnels on a loopback TLS listener with s, as the manager's direct port
// does: handshake, hello, token check, ServeRaw. It returns the address and the client's TLS config.
func rawServer(t testing.TB, s *Server, token string) (string, func() *RawConn) {
	t.Helper()
	clientCfg, serverCfg := testTLSConfigs(t)
	serverCfg.NextProtos = []string{RawALPN}
	clientCfg.NextProtos = []string{RawALPN}
	lis := listenTCP(t, func(c *net.TCPConn) {
		tc, err := ServerTLS(context.Background(), c, serverCfg)
		if err != nil {
			return
		}
		got, d, err := ReadRawHello(tc)
		if err != nil || got != token {
			return
		}
		_ = s.ServeRaw(context.Background(), NewRawConn(tc), d)
	})
	dial := func() *RawConn {
		raw, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc, err := ClientTLS(context.Background(), raw, clientCfg)
		if err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != RawALPN {
			t.Fatalf("ALPN %q, want %q", p, RawALPN)
		}
		return NewRawConn(tc)
	}
	return lis.Addr().String(), dial
}

func newRawTestServer(t testing.TB) *Server {
	t.Helper()
	var d net.Dialer
	s, err := NewServer(ServerConfig{}, d.DialContext, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A raw tunnel carries bytes both ways with half-close: the destination hashes what it reads
// until EOF and then answers; the client reads the answer until EOF; both ends close cleanly.
func TestRawTunnel(t *testing.T) {
	checkGoroutines(t)
	s := newRawTestServer(t)
	_, dial := rawServer(t, s, "tok")
	checkHashRoundTrip(t, s, dial(), "tok", 1<<20)
}

// checkHashRoundTrip sends n bytes through the tunnel conn starts to a destination that hashes
// what it reads until EOF and then answers, and checks the answer, read until EOF; then that the
// server is idle.
func checkHashRoundTrip(t *testing.T, s *Server, conn RawEnd, token string, n int) {
	t.Helper()
	dst := listenTCP(t, func(c *net.TCPConn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		_, _ = c.Write(h.Sum(nil))
		_ = c.CloseWrite()
	})
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := DialRaw(ctx, conn, token, "s1", dst.Addr().(*net.TCPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	go func() {
		_, _ = conn.Write(payload)
		_ = conn.CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(payload); !bytes.Equal(got, want[:]) {
		t.Fatalf("the destination hashed other bytes: %x", got)
	}
	conn.Close()
	waitIdle(t, s)
}

// A refused destination is a *DialError, as over a Tunnel stream.
func TestRawTunnelRefused(t *testing.T) {
	s := newRawTestServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	_, dial := rawServer(t, s, "tok")
	err = DialRaw(context.Background(), dial(), "tok", "s1", closed)
	var derr *DialError
	if !errors.As(err, &derr) || !errors.Is(err, ErrRefused) {
		t.Fatalf("DialRaw to a closed port = %v, want a refused DialError", err)
	}
}

// A hello the server does not take (a wrong token here) ends the connection without a result:
// DialRaw fails with an error that is not a DialError, which tells the caller to fall back.
func TestRawTunnelNotServed(t *testing.T) {
	s := newRawTestServer(t)
	_, dial := rawServer(t, s, "tok")
	err := DialRaw(context.Background(), dial(), "other", "s1", netip.MustParseAddrPort("127.0.0.1:1"))
	var derr *DialError
	if err == nil || errors.As(err, &derr) {
		t.Fatalf("DialRaw with a token the server refuses = %v, want a non-DialError", err)
	}
}

// A flow cut short is a reset at the other end, never a clean EOF: the client closing without
// CloseWrite resets the destination's connection, and the destination resetting its connection
// makes the client's Read fail.
func TestRawTunnelResets(t *testing.T) {
	_, dial := rawServer(t, newRawTestServer(t), "tok")
	checkResets(t, func() RawEnd { return dial() }, "tok")
}

// checkResets checks that a flow cut short at either end of the tunnels dial opens is a reset at
// the other.
func checkResets(t *testing.T, dial func() RawEnd, token string) {
	t.Helper()
	dstErr := make(chan error, 1)
	dst := listenTCP(t, func(c *net.TCPConn) {
		_, err := io.Copy(io.Discard, c)
		dstErr <- err
	})
	conn := dial()
	if err := DialRaw(context.Background(), conn, token, "s1", dst.Addr().(*net.TCPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("half a request")); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case err := <-dstErr:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the destination read %v after the client closed mid-flow, want a reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the destination's connection stayed open after the client closed")
	}

	resetting := listenTCP(t, func(c *net.TCPConn) {
		b := make([]byte, 1)
		_, _ = c.Read(b)
		_ = c.SetLinger(0)
	})
	conn = dial()
	defer conn.Close()
	if err := DialRaw(context.Background(), conn, token, "s1", resetting.Addr().(*net.TCPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the client read %v after the destination reset, want ECONNRESET", err)
	}
}

// Hellos survive the round trip; oversized or truncated parts are errors, not allocations.
func TestRawHello(t *testing.T) {
	var b bytes.Buffer
	d := &managerv1.Dial{SessionId: "s", Protocol: managerv1.Protocol_PROTOCOL_TCP, Address: "10.0.0.1:80", TimeoutMs: 7}
	if err := WriteRawHello(&b, "token", d); err != nil {
		t.Fatal(err)
	}
	tok, got, err := ReadRawHello(bytes.NewReader(b.Bytes()))
	if err != nil || tok != "token" || got.GetAddress() != d.GetAddress() || got.GetTimeoutMs() != 7 || got.GetSessionId() != "s" {
		t.Fatalf("ReadRawHello = %q %v %v", tok, got, err)
	}
	if _, _, err := ReadRawHello(bytes.NewReader(b.Bytes()[:b.Len()-1])); err == nil {
		t.Error("a truncated hello was read")
	}
	if _, _, err := ReadRawHello(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff})); !errors.Is(err, ErrProtocol) {
		t.Errorf("a 4 GiB part: %v, want ErrProtocol", err)
	}
	if err := WriteRawHello(io.Discard, strings.Repeat("t", maxPart+1), d); err == nil {
		t.Error("an oversized token was written")
	}
}

func FuzzReadRawHello(f *testing.F) {
	var b bytes.Buffer
	_ = WriteRawHello(&b, "token", &managerv1.Dial{SessionId: "s", Address: "10.0.0.1:80"})
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 1, 'x', 0, 0, 0, 2, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, d, err := ReadRawHello(bytes.NewReader(in))
		if err != nil {
			return
		}
		// What was read writes back to a hello that reads the same.
		var out bytes.Buffer
		if err := WriteRawHello(&out, tok, d); err != nil {
			t.Fatal(err)
		}
		tok2, d2, err := ReadRawHello(&out)
		if err != nil || tok2 != tok || d2.GetAddress() != d.GetAddress() || d2.GetSessionId() != d.GetSessionId() {
			t.Fatalf("round trip: %q %v %v", tok2, d2, err)
		}
	})
}
