package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/tunnel"
)

// echoListener answers every connection with what it reads, then half-closes.
func echoListener(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// roundTrip sends msg on a raw tunnel to an echo and reads it back up to EOF.
func roundTrip(t *testing.T, s *Session, dst netip.AddrPort, msg string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.DialRaw(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != msg {
		t.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// With the direct port in use, TCP flows are raw tunnels: no Tunnel stream is opened for them.
func TestRawTunnelsOnTheDirectPort(t *testing.T) {
	f, d := startDirectFake(t, true)
	s := runSessionWith(t, d, TransportAuto)
	dst := echoListener(t)
	for i := range 5 { // more flows than spares
		if err := roundTrip(t, s, dst, "hello "+string(rune('a'+i))); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
	}
	if n, m := f.direct.n.Load(), f.pf.n.Load(); n != 0 || m != 0 {
		t.Errorf("Tunnel streams: direct %d, port-forward %d; want none", n, m)
	}
	// A refused destination is the destination's answer, not a reason to fall back.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	if err := roundTrip(t, s, closed, "x"); err == nil || errors.Is(err, ErrNoRaw) {
		t.Errorf("raw tunnel to a closed port: %v, want the dial's error", err)
	}
}

// A manager without raw tunnels (gRPC only on its direct port) makes DialRaw say ErrNoRaw, and
// the session still uses the direct port for Tunnel streams.
func TestRawTunnelsNotServed(t *testing.T) {
	f, d := startDirectFakeWith(t, true, true)
	s := runSessionWith(t, d, TransportAuto)
	dst := echoListener(t)
	if err := roundTrip(t, s, dst, "x"); !errors.Is(err, ErrNoRaw) {
		t.Fatalf("DialRaw against a manager without raw tunnels: %v, want ErrNoRaw", err)
	}
	openTunnel(t, s)
	if f.direct.n.Load() != 1 {
		t.Errorf("Tunnel streams on the direct port: %d, want 1", f.direct.n.Load())
	}
}

// Without the direct port there are no raw tunnels.
func TestRawTunnelsNeedTheDirectPort(t *testing.T) {
	_, d := startDirectFake(t, true)
	s := runSessionWith(t, d, TransportPortForward)
	if err := roundTrip(t, s, echoListener(t), "x"); !errors.Is(err, ErrNoRaw) {
		t.Fatalf("DialRaw with --transport port-forward: %v, want ErrNoRaw", err)
	}
}

// Spares that the manager dropped meanwhile (it restarted) are replaced, and the flow opens.
func TestRawTunnelSparesDropped(t *testing.T) {
	certs, err := inject.NewServingCerts("traffic-manager-direct", "teledock", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certs.Cert, certs.Key)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{tunnel.RawALPN}}
	var d net.Dialer
	srv, err := tunnel.NewServer(tunnel.ServerConfig{}, d.DialContext, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := accepted.Add(1)
			go func() {
				tc, err := tunnel.ServerTLS(context.Background(), c, serverTLS)
				if err != nil || n <= spareCount {
					c.Close() // the spares die with the "old manager"
					return
				}
				if _, dial, err := tunnel.ReadRawHello(tc); err == nil {
					_ = srv.ServeRaw(context.Background(), tunnel.NewRawConn(tc), dial)
				}
			}()
		}
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certs.CACert)
	r := newRawDialer(&tls.Config{RootCAs: pool, ServerName: "traffic-manager-direct.teledock.svc", MinVersion: tls.VersionTLS13},
		[]string{l.Addr().String()}, "token", "s1", testLogger(t))
	defer r.close()
	waitFor(t, "spares", func() bool { return len(r.spares.ready) == spareCount })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.open(ctx, echoListener(t))
	if err != nil {
		t.Fatalf("open with dead spares: %v", err)
	}
	c.Close()
	if n := accepted.Load(); n <= spareCount {
		t.Errorf("%d connections made, want more than the %d dead spares", n, spareCount)
	}
}
