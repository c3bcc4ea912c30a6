package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// echoServer answers every connection with what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestVolumesTunnel(t *testing.T) {
	f := &fakeIntercepts{volumes: echoServer(t)}
	client := dialTest(t, startDaemonWith(t, &fakeSession{}, f))
	open := func(ctx context.Context) (tunnel.ClientStream, error) { return client.Volumes(ctx) }
	sftpAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), agentconfig.VolumesPort)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := tunnel.DialStream(ctx, open, &managerv1.Dial{InterceptId: "echo"}, "tcp", sftpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v; want the echo", buf, err)
	}
	if len(f.dialed) != 1 || f.dialed[0] != "echo" {
		t.Errorf("DialVolumes calls %q, want [echo]", f.dialed)
	}

	// The API is no way into the pod's loopback at large, and an intercept must be named.
	for _, tc := range []struct {
		name      string
		intercept string
		addr      netip.AddrPort
		network   string
	}{
		{"other port", "echo", netip.AddrPortFrom(sftpAddr.Addr(), 8080), "tcp"},
		{"other host", "echo", netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), agentconfig.VolumesPort), "tcp"},
		{"udp", "echo", sftpAddr, "udp"},
		{"no intercept", "", sftpAddr, "tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tunnel.DialStream(ctx, open, &managerv1.Dial{InterceptId: tc.intercept}, tc.network, tc.addr)
			if !errors.Is(err, tunnel.ErrBadRequest) {
				t.Errorf("dial: %v, want a bad request", err)
			}
		})
	}
	if len(f.dialed) != 1 {
		t.Errorf("refused dials reached the intercepts: %q", f.dialed)
	}
}
