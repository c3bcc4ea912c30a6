package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/client-go/kubernetes/fake"

	managerv1 "teledock.dev/teledock/api/manager/v1"
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
			want: options{listen: ":8081", namespace: "teledock", agentImage: "teledock/agent:v1",
				resolvConf: "/etc/resolv.conf", logLevel: slog.LevelInfo},
		},
		{
			name: "flags win",
			args: []string{"--listen", "127.0.0.1:9", "--namespace", "ns", "--log-level", "debug"},
			env:  map[string]string{"POD_NAMESPACE": "teledock", "LOG_LEVEL": "warn"},
			want: options{listen: "127.0.0.1:9", namespace: "ns", resolvConf: "/etc/resolv.conf", logLevel: slog.LevelDebug},
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

// TestServe starts the server with a fake cluster, checks health and an RPC, and shuts it down.
func TestServe(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	cfg := manager.Config{Version: "v9", Namespace: "teledock"}
	go func() { done <- serve(ctx, lis, cfg, fake.NewClientset(), log) }()

	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
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

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(shutdownGrace + time.Second):
		t.Fatal("serve did not return after cancel")
	}
}
