package manager

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/workload"
)

// TestAgentEndpoint: what any pod can reach through the Service serves agents only.
func TestAgentEndpoint(t *testing.T) {
	// Agents' own calls on this endpoint (ArriveAgent, WatchAgent, AgentTunnel, Accept) are what
	// every intercept test does: fakeCluster's agents use it.
	fc := newFakeCluster(t, Config{}, echoDeployment("echo")...)
	ctx := context.Background()
	client := fc.arriveClient("alice")

	denied := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s on the agents' endpoint: %v, want PermissionDenied", what, err)
		}
	}
	_, err := fc.agents.ArriveClient(ctx, &managerv1.ClientInfo{Name: "mallory", Namespace: "default"})
	denied("ArriveClient", err)
	_, err = fc.agents.ListSessions(ctx, &managerv1.ListSessionsRequest{})
	denied("ListSessions", err)
	_, err = fc.agents.ListIntercepts(ctx, &managerv1.ListInterceptsRequest{})
	denied("ListIntercepts", err)
	_, err = fc.agents.CreateIntercept(ctx, &managerv1.CreateInterceptRequest{SessionId: client, Name: "echo"})
	denied("CreateIntercept with a client's session", err)
	_, err = fc.agents.Remain(ctx, &managerv1.SessionRequest{SessionId: client})
	denied("Remain with a client's session", err)
	// Shared RPCs need an agent's session here.
	_, err = fc.agents.Depart(ctx, &managerv1.SessionRequest{SessionId: client})
	denied("Depart with a client's session", err)
	if _, err := fc.m.session(client); err != nil {
		t.Errorf("the client's session is gone after a refused Depart: %v", err)
	}
	s, err := fc.agents.Accept(ctx)
	if err == nil {
		s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: client, ConnId: "c1"}}})
		_, err = s.Recv()
	}
	denied("Accept with a client's session", err)
	w, err := fc.agents.WatchDials(ctx, &managerv1.SessionRequest{SessionId: client})
	if err == nil {
		_, err = w.Recv()
	}
	denied("WatchDials", err)

	// What agents do is served.
	if _, err := fc.agents.Version(ctx, &managerv1.VersionRequest{}); err != nil {
		t.Errorf("Version: %v", err)
	}
	// The clients' endpoint serves everything.
	if _, err := fc.client.ListSessions(ctx, &managerv1.ListSessionsRequest{}); err != nil {
		t.Errorf("ListSessions on the clients' endpoint: %v", err)
	}
}

// TestAgentMustProveItsPod: an agent arrives only with a token bound to the pod it names.
func TestAgentMustProveItsPod(t *testing.T) {
	fc := newFakeCluster(t, Config{}, echoDeployment("echo")...)
	info := &managerv1.AgentInfo{PodName: "echo-abc-1", Namespace: "default"}
	tests := []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no token", context.Background(), codes.Unauthenticated},
		{"not a token", metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer forged"), codes.Unauthenticated},
		{"another pod's token", podToken("default", "mallory"), codes.PermissionDenied},
		{"another namespace's pod", podToken("other", "echo-abc-1"), codes.PermissionDenied},
		// A valid token of the pod's ServiceAccount that no pod is bound to: any pod (or a
		// leaked legacy Secret token) of that ServiceAccount could present it.
		{"ServiceAccount token bound to no pod", bearer("sa:default.payload.signature"), codes.PermissionDenied},
		{"the pod's token for another audience", bearer("aud:default/echo-abc-1.payload.signature"), codes.Unauthenticated},
		{"not JWT-shaped", bearer("pod:default/echo-abc-1"), codes.Unauthenticated},
	}
	for _, tt := range tests {
		if _, err := fc.agents.ArriveAgent(tt.ctx, info); status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	fc.m.mu.Lock()
	n := len(fc.m.sessions)
	fc.m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d sessions opened by refused agents", n)
	}
}

func bearer(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

// TestAgentHeartbeat: an agent keeps its session on the agents' endpoint (Remain), and departs.
func TestAgentHeartbeat(t *testing.T) {
	fc := newFakeCluster(t, Config{}, append(echoDeployment("echo"), echoService("echo", "echo"))...)
	ctx := context.Background()
	wl, err := workload.Get(ctx, fc.k8s, "default", "echo")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fc.m.plan(ctx, wl)
	if err != nil {
		t.Fatal(err)
	}
	if err := fc.m.store.Put(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	agent := fc.arriveAgent(fc.startPod("echo-abc-1", "echo", false, running))
	if _, err := fc.agents.Remain(ctx, &managerv1.SessionRequest{SessionId: agent.session}); err != nil {
		t.Errorf("an agent's heartbeat on the agents' endpoint: %v", err)
	}
	if _, err := fc.agents.Depart(ctx, &managerv1.SessionRequest{SessionId: agent.session}); err != nil {
		t.Errorf("an agent departing on the agents' endpoint: %v", err)
	}
}
