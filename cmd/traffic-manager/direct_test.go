package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/manager"
	"teledock.dev/teledock/tunnel"
)

// TestServeDirect runs the manager with a direct port: a client learns it over the plain port,
// then tunnels through it with the pinned CA and its token; without the token it is refused.
func TestServeDirect(t *testing.T) {
	ls := listeners{grpc: listen(t), client: listen(t), direct: listen(t)}
	port := ls.direct.Addr().(*net.TCPAddr).Port
	var err error
	cfg := manager.Config{Version: "v9", Namespace: "teledock"}
	if ls.directTLS, cfg.Direct, err = newDirectTLS("traffic-manager-direct", "teledock"); err != nil {
		t.Fatal(err)
	}
	// The fake node's NodePort is the test's listener, so the addresses DirectInfo offers work.
	k8s := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "traffic-manager-direct", Namespace: "teledock"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8083, NodePort: int32(port)}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}}},
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ls, cfg, k8s, slog.New(slog.NewTextHandler(t.Output(), nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	plain, err := grpc.NewClient("passthrough:///"+ls.client.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	mc := managerv1.NewManagerClient(plain)
	sess, err := mc.ArriveClient(rctx, &managerv1.ClientInfo{Name: "c", Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := mc.DirectInfo(rctx, &managerv1.SessionRequest{SessionId: sess.GetSessionId()})
	if err != nil {
		t.Fatal(err)
	}
	if want := "127.0.0.1:" + strconv.Itoa(port); len(info.GetAddresses()) != 1 || info.GetAddresses()[0] != want {
		t.Fatalf("addresses %v, want [%s]", info.GetAddresses(), want)
	}

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(info.GetCaCert()) {
		t.Fatal("bad CA")
	}
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: info.GetServerName(), MinVersion: tls.VersionTLS13}
	dc, err := grpc.NewClient("passthrough:///"+info.GetAddresses()[0], grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()

	// No token: refused, even for the health check.
	if _, err := healthpb.NewHealthClient(dc).Check(rctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("health without token: %v, want Unauthenticated", err)
	}

	// With the token, a tunnel reaches a destination and carries bytes.
	echo := listen(t)
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	tctx := metadata.AppendToOutgoingContext(rctx, "authorization", "Bearer "+info.GetToken())
	conn, err := tunnel.Dial(tctx, managerv1.NewManagerClient(dc), sess.GetSessionId(), "tcp", netip.MustParseAddrPort(echo.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
}
