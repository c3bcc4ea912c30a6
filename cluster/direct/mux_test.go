package direct

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/tunnel"
)

// The direct port serves gRPC and raw tunnels on one TLS listener: gRPC by h2, raw tunnels only
// with a live session's token naming that session and no intercept.
func TestMux(t *testing.T) {
	certs, err := inject.NewServingCerts("traffic-manager-direct", "teledock", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certs.Cert, certs.Key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(func(tok string) (string, bool) { return "s1", tok == "good" })
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int32
	raw := func(_ context.Context, c tunnel.RawEnd, d *managerv1.Dial) error {
		served.Add(1)
		defer c.Close()
		return nil
	}
	mux := g.NewMux(l, &tls.Config{Certificates: []tls.Certificate{pair}}, raw, slog.New(slog.DiscardHandler))
	srv := grpc.NewServer(g.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	muxDone := make(chan error, 1)
	go func() { muxDone <- mux.Serve(context.Background()) }()
	go func() { _ = srv.Serve(mux.GRPC()) }()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certs.CACert)
	clientTLS := &tls.Config{RootCAs: pool, ServerName: "traffic-manager-direct.teledock.svc", MinVersion: tls.VersionTLS13}

	// gRPC: the guarded health check, with a token.
	conn, err := grpc.NewClient("passthrough:///"+l.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer good"), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health over the mux: %v", err)
	}

	rawCfg := clientTLS.Clone()
	rawCfg.NextProtos = []string{tunnel.RawALPN, "h2"}
	hello := func(token string, d *managerv1.Dial) error {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc, err := tunnel.ClientTLS(ctx, c, rawCfg)
		if err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != tunnel.RawALPN {
			t.Fatalf("ALPN %q, want the raw tunnel's", p)
		}
		rc := tunnel.NewRawConn(tc)
		defer rc.Close()
		if err := tunnel.WriteRawHello(rc, token, d); err != nil {
			t.Fatal(err)
		}
		_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = rc.Read(make([]byte, 1))
		return err
	}
	dst := netip.MustParseAddrPort("10.0.0.1:80").String()
	for name, tc := range map[string]struct {
		token string
		dial  *managerv1.Dial
	}{
		"no token":      {"", &managerv1.Dial{SessionId: "s1", Address: dst}},
		"unknown token": {"bad", &managerv1.Dial{SessionId: "s1", Address: dst}},
		"other session": {"good", &managerv1.Dial{SessionId: "s2", Address: dst}},
		"intercept":     {"good", &managerv1.Dial{SessionId: "s1", Address: dst, InterceptId: "i1"}},
	} {
		before := served.Load()
		if err := hello(tc.token, tc.dial); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: read %v, want the connection ended", name, err)
		}
		if served.Load() != before {
			t.Errorf("%s: the raw tunnel was served", name)
		}
	}
	_ = hello("good", &managerv1.Dial{SessionId: "s1", Address: dst})
	if served.Load() != 1 {
		t.Errorf("a good hello served %d times, want 1", served.Load())
	}

	srv.Stop() // closes the mux's gRPC listener, and with it the mux
	select {
	case err := <-muxDone:
		if err != nil {
			t.Errorf("mux.Serve after Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the mux still accepts after the gRPC server stopped")
	}
}
