package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/manager"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    options
		wantErr bool
	}{
		{
			name: "defaults from the environment",
			env:  map[string]string{"POD_NAMESPACE": "teledock", "AGENT_IMAGE": "teledock/agent:v1"},
			want: options{listen: ":8081", clientListen: "127.0.0.1:8082", clientRawListen: "127.0.0.1:8084", namespace: "teledock", agentImage: "teledock/agent:v1",
				resolvConf: "/etc/resolv.conf", logLevel: slog.LevelInfo, webhookCertDir: "/var/run/teledock/webhook-tls",
				directService: "traffic-manager-direct"},
		},
		{
			name: "direct port from the environment",
			env:  map[string]string{"POD_NAMESPACE": "teledock", "DIRECT_LISTEN": ":8083", "DIRECT_SERVICE": "tm-direct", "NODE_NAME": "n1"},
			want: options{listen: ":8081", clientListen: "127.0.0.1:8082", clientRawListen: "127.0.0.1:8084", namespace: "teledock", resolvConf: "/etc/resolv.conf", logLevel: slog.LevelInfo,
				webhookCertDir: "/var/run/teledock/webhook-tls", directListen: ":8083", directService: "tm-direct", nodeName: "n1"},
		},
		{
			name: "flags win",
			args: []string{"--listen", "127.0.0.1:9", "--client-listen", "127.0.0.1:10", "--client-raw-listen", "", "--namespace", "ns", "--log-level", "debug", "--webhook-listen", ":9443"},
			env: map[string]string{"POD_NAMESPACE": "teledock", "LOG_LEVEL": "warn", "WEBHOOK_LISTEN": ":8443",
				"MANAGER_ADDRESS": "tm.ns:8081", "WEBHOOK_CERT_DIR": "/certs"},
			want: options{listen: "127.0.0.1:9", clientListen: "127.0.0.1:10", namespace: "ns", resolvConf: "/etc/resolv.conf", logLevel: slog.LevelDebug,
				managerAddress: "tm.ns:8081", webhookListen: ":9443", webhookCertDir: "/certs", directService: "traffic-manager-direct"},
		},
		{name: "no namespace", wantErr: true},
		{name: "stray argument", args: []string{"x"}, env: map[string]string{"POD_NAMESPACE": "n"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error: %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestServe starts the server with a fake cluster, checks health, an RPC and the webhook, and
// shuts it down.
func TestServe(t *testing.T) {
	ls := listeners{grpc: listen(t), client: listen(t), webhook: listen(t)}
	dir := t.TempDir()
	ca := writeCerts(t, dir, time.Now())
	var err error
	if ls.certs, err = newCertFiles(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	cfg := manager.Config{Version: "v9", Namespace: "teledock"}
	go func() { done <- serve(ctx, ls, cfg, fake.NewClientset(), log) }()

	cc, err := grpc.NewClient("passthrough:///"+ls.grpc.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	h, err := healthpb.NewHealthClient(cc).Check(rctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v, %v", h, err)
	}
	v, err := managerv1.NewManagerClient(cc).Version(rctx, &managerv1.VersionRequest{})
	if err != nil || v.GetVersion() != "v9" {
		t.Fatalf("Version %v, %v", v, err)
	}
	// The Service's endpoint is the agents'; clients have their own.
	_, err = managerv1.NewManagerClient(cc).ListSessions(rctx, &managerv1.ListSessionsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListSessions on the agents' endpoint: %v, want PermissionDenied", err)
	}
	ccc, err := grpc.NewClient("passthrough:///"+ls.client.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer ccc.Close()
	if _, err := managerv1.NewManagerClient(ccc).ListSessions(rctx, &managerv1.ListSessionsRequest{}); err != nil {
		t.Errorf("ListSessions on the clients' endpoint: %v", err)
	}

	// The API server calls the webhook by the service's name, verifying it with the CA bundle.
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "42", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Operation: admissionv1.Create, Namespace: "default", Object: runtime.RawExtension{Raw: []byte(`{"metadata":{"name":"p"}}`)}},
	}
	body, _ := json.Marshal(review)
	hc := webhookClient(ca, ls.webhook.Addr().String())
	resp, err := hc.Post("https://traffic-manager.teledock.svc"+inject.DefaultWebhookPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var got admissionv1.AdmissionReview
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || got.Response == nil || got.Response.UID != "42" || !got.Response.Allowed {
		t.Errorf("webhook answered %+v, %v", got.Response, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(2*shutdownGrace + time.Second):
		t.Fatal("serve did not return after cancel")
	}
}

func listen(t *testing.T) net.Listener {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// writeCerts writes a fresh serving certificate for the manager's service to dir and returns
// its CA.
func writeCerts(t *testing.T, dir string, now time.Time) []byte {
	t.Helper()
	certs, err := inject.NewServingCerts("traffic-manager", "teledock", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": certs.Cert, "tls.key": certs.Key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certs.CACert
}

// webhookClient trusts only ca and connects to addr whatever the URL's host.
func webhookClient(ca []byte, addr string) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

// TestCertReload checks that a certificate rotated in place is served without a restart.
func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	writeCerts(t, dir, time.Now())
	c, err := newCertFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := c.GetCertificate(nil)
	if again, _ := c.GetCertificate(nil); again != first {
		t.Error("unchanged files loaded again")
	}
	writeCerts(t, dir, time.Now())
	// Make the change visible even on a file system with coarse timestamps.
	later := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(dir, "tls.crt"), later, later)
	second, err := c.GetCertificate(nil)
	if err != nil || second == first || bytes.Equal(second.Certificate[0], first.Certificate[0]) {
		t.Errorf("rotated certificate not loaded: %v", err)
	}
	if _, err := newCertFiles(t.TempDir()); err == nil {
		t.Error("no error for a directory without certificates")
	}
}
