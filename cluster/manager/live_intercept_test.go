package manager

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// TestLiveIntercept creates and removes an intercept through a deployed traffic-manager (see
// TestLiveManager). It runs only when TELEDOCK_TEST_MANAGER is set and TELEDOCK_TEST_INTERCEPT
// names a workload as NAMESPACE/NAME; TELEDOCK_TEST_INTERCEPT_WAIT bounds the wait for the agent
// (default 30s). It logs the outcome rather than requiring one, so that it also shows why an
// agent does not arrive (for instance while the agent image is missing).
func TestLiveIntercept(t *testing.T) {
	addr, target := os.Getenv("TELEDOCK_TEST_MANAGER"), os.Getenv("TELEDOCK_TEST_INTERCEPT")
	if addr == "" || target == "" {
		t.Skip("set TELEDOCK_TEST_MANAGER and TELEDOCK_TEST_INTERCEPT=NAMESPACE/NAME")
	}
	namespace, name, ok := strings.Cut(target, "/")
	if !ok {
		t.Fatalf("TELEDOCK_TEST_INTERCEPT=%q, want NAMESPACE/NAME", target)
	}
	wait := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TELEDOCK_TEST_INTERCEPT_WAIT")); err == nil {
		wait = d
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		append(tunnel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := managerv1.NewManagerClient(cc)
	ctx := context.Background()
	s, err := client.ArriveClient(ctx, &managerv1.ClientInfo{Name: "live-test", Hostname: "imgr", Namespace: namespace})
	if err != nil {
		t.Fatal(err)
	}
	sid := s.GetSessionId()
	defer client.Depart(context.Background(), &managerv1.SessionRequest{SessionId: sid})

	wls, err := client.ListWorkloads(ctx, &managerv1.ListWorkloadsRequest{SessionId: sid})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range wls.GetWorkloads() {
		t.Logf("%s %s: %s", w.GetKind(), w.GetName(), w.GetState())
	}

	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	info, err := client.CreateIntercept(cctx, &managerv1.CreateInterceptRequest{
		SessionId: sid, Name: name, Port: os.Getenv("TELEDOCK_TEST_INTERCEPT_PORT"), LocalPort: 8080, Destination: "127.0.0.1:8080",
	})
	t.Logf("CreateIntercept after %v: %v, %v", time.Since(start).Round(time.Millisecond), info, err)
	if err != nil {
		return
	}
	if _, err := client.RemoveIntercept(ctx, &managerv1.RemoveInterceptRequest{SessionId: sid, Name: name}); err != nil {
		t.Errorf("RemoveIntercept: %v", err)
	}
}
