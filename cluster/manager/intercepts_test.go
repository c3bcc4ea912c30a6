package manager

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
	"teledock.dev/teledock/tunnel"
)

// create runs CreateIntercept with a deadline.
func (fc *fakeCluster) create(req *managerv1.CreateInterceptRequest, timeout time.Duration) (*managerv1.InterceptInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return fc.client.CreateIntercept(ctx, req)
}

// TestInterceptLifecycle follows an intercept from the first CreateIntercept, through the
// rollout that injects the agent, a connection from the agent to the client, a port change, to
// its removal, which must not restart anything.
func TestInterceptLifecycle(t *testing.T) {
	checkGoroutines(t)
	objs := append(echoDeployment("echo"), echoService("echo", "echo",
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "dns", Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP}))
	fc := newFakeCluster(t, Config{}, objs...)
	fc.startPod("echo-abc-old", "echo", true, running) // from before teledock
	client := fc.arriveClient("alice")

	type result struct {
		info *managerv1.InterceptInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := fc.create(&managerv1.CreateInterceptRequest{
			SessionId: client, Name: "echo", Port: "http", Destination: "127.0.0.1:9000", LocalPort: 9000,
		}, 10*time.Second)
		done <- result{info, err}
	}()

	// The manager rolls the Deployment out; the "controller" replaces the pod, the webhook
	// injects the agent, and the agent arrives.
	rollout := fc.awaitRollout("echo", "")
	if err := fc.k8s.CoreV1().Pods("default").Delete(context.Background(), "echo-abc-old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := fc.startPod("echo-abc-new", "echo", false, running)
	if !inject.HasAgent(pod) || pod.Annotations[workload.AnnotationRollout] != rollout {
		t.Fatalf("new pod not injected: %v", pod.Spec.Containers)
	}
	agent := fc.arriveAgent(pod)
	if got := interceptedPorts(agent.nextTargets(t)); len(got) != 2 {
		t.Errorf("initial targets %v, want 8080 and 5353", got)
	}

	r := <-done
	if r.err != nil {
		t.Fatalf("CreateIntercept: %v", r.err)
	}
	info := r.info
	want := &managerv1.InterceptInfo{
		Id: info.GetId(), Name: "echo", Namespace: "default", Workload: "echo", WorkloadKind: "Deployment",
		State: "ACTIVE", Service: "echo", ServicePortIdentifier: "http", ServicePort: 80, TargetPort: 8080,
		Protocol: managerv1.Protocol_PROTOCOL_TCP, Destination: "127.0.0.1:9000", LocalPort: 9000,
		SessionId: client, Client: "alice@laptop", Environment: info.GetEnvironment(), ToPod: []*managerv1.ToPod{},
	}
	if info.String() != want.String() {
		t.Errorf("InterceptInfo\n got %v\nwant %v", info, want)
	}
	if g := info.GetEnvironment()["GREETING"]; g != "hello from 10.96.0.80" {
		t.Errorf("GREETING = %q, want the service host expanded", g)
	}
	agent.awaitTargets(t, map[int32]string{8080: info.GetId(), 5353: ""})

	// A connection the agent receives on 8080 reaches the client.
	go serveAccepts(t, fc.client, client, watchDials(t, fc.client, client), nil)
	c, err := tunnel.DialStream(context.Background(), func(ctx context.Context) (tunnel.ClientStream, error) { return fc.agents.AgentTunnel(ctx) },
		&managerv1.Dial{SessionId: agent.session, InterceptId: info.GetId(), TargetPort: 8080}, "tcp", netip.MustParseAddrPort("10.244.0.9:8080"))
	if err != nil {
		t.Fatalf("agent tunnel: %v", err)
	}
	if got := echoOnce(t, c, "ping"); got != "ping" {
		t.Errorf("echo through the client: %q", got)
	}

	wls, err := fc.client.ListWorkloads(context.Background(), &managerv1.ListWorkloadsRequest{SessionId: client})
	if err != nil {
		t.Fatal(err)
	}
	if len(wls.GetWorkloads()) != 1 || wls.GetWorkloads()[0].GetState() != "intercepted" || !wls.GetWorkloads()[0].GetAgentInstalled() {
		t.Errorf("ListWorkloads = %v", wls)
	}

	// Intercepting again under the same name with another port changes the intercept.
	info2, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "echo", Port: "dns", LocalPort: 5353}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if info2.GetId() != info.GetId() || info2.GetTargetPort() != 5353 || info2.GetProtocol() != managerv1.Protocol_PROTOCOL_UDP {
		t.Errorf("changed intercept %v", info2)
	}
	agent.awaitTargets(t, map[int32]string{8080: "", 5353: info.GetId()})

	// Removing it sends traffic back to the app, with no restart: no new rollout, same pod.
	if _, err := fc.client.RemoveIntercept(context.Background(), &managerv1.RemoveInterceptRequest{SessionId: client, Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	agent.awaitTargets(t, map[int32]string{8080: "", 5353: ""})
	d, _ := fc.k8s.AppsV1().Deployments("default").Get(context.Background(), "echo", metav1.GetOptions{})
	if v := d.Spec.Template.Annotations[workload.AnnotationRollout]; v != rollout {
		t.Errorf("rollout annotation %q after remove, want %q unchanged", v, rollout)
	}
	if _, err := fc.k8s.CoreV1().Pods("default").Get(context.Background(), "echo-abc-new", metav1.GetOptions{}); err != nil {
		t.Errorf("pod after remove: %v", err)
	}
	wls, _ = fc.client.ListWorkloads(context.Background(), &managerv1.ListWorkloadsRequest{SessionId: client})
	if s := wls.GetWorkloads()[0].GetState(); s != "ready to intercept (traffic-agent already installed)" {
		t.Errorf("state after remove %q", s)
	}
	if _, err := fc.client.RemoveIntercept(context.Background(), &managerv1.RemoveInterceptRequest{SessionId: client, Name: "echo"}); status.Code(err) != codes.NotFound {
		t.Errorf("second remove: %v, want NotFound", err)
	}
}

// readyCluster is a cluster where the agent of echo runs already, so CreateIntercept needs no
// rollout.
func readyCluster(t *testing.T, objs ...runtime.Object) (*fakeCluster, *fakeAgent) {
	t.Helper()
	fc, pod := readyPod(t, objs...)
	return fc, fc.arriveAgent(pod)
}

// readyPod is a cluster where echo's config is stored and a pod of echo runs it, its agent not
// arrived yet.
func readyPod(t *testing.T, objs ...runtime.Object) (*fakeCluster, *corev1.Pod) {
	t.Helper()
	fc := newFakeCluster(t, Config{}, objs...)
	wl, err := workload.Get(context.Background(), fc.k8s, "default", "echo")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fc.m.plan(context.Background(), wl)
	if err != nil {
		t.Fatal(err)
	}
	if err := fc.m.store.Put(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	return fc, fc.startPod("echo-abc-1", "echo", false, running)
}

func TestCreateInterceptErrors(t *testing.T) {
	objs := append(echoDeployment("echo"), echoDeployment("other")...)
	objs = append(objs,
		echoService("echo", "echo", corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			corev1.ServicePort{Name: "alt", Port: 81, TargetPort: intstr.FromString("http")},
			corev1.ServicePort{Name: "dns", Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP}),
		echoService("echo-canary", "echo"),
		echoService("other", "other"),
	)
	objs = append(objs, echoDeployment("lonely", func(d *appsv1.Deployment) { d.Spec.Template.Labels["app"] = "nobody" })...)
	fc, agent := readyCluster(t, objs...)
	alice, bob := fc.arriveClient("alice"), fc.arriveClient("bob")
	if _, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: alice, Name: "mine", Workload: "echo", Service: "echo", Port: "http"}, 5*time.Second); err != nil {
		t.Fatalf("first intercept: %v", err)
	}

	tests := []struct {
		name string
		req  *managerv1.CreateInterceptRequest
		code codes.Code
		msg  string
	}{
		{"no name", &managerv1.CreateInterceptRequest{SessionId: alice}, codes.InvalidArgument, "no name"},
		{"bad mechanism", &managerv1.CreateInterceptRequest{SessionId: alice, Name: "echo", Mechanism: "http"}, codes.InvalidArgument, "mechanism"},
		{"agent session", &managerv1.CreateInterceptRequest{SessionId: agent.session, Name: "echo"}, codes.PermissionDenied, ""},
		{"unknown workload", &managerv1.CreateInterceptRequest{SessionId: alice, Name: "nope"}, codes.NotFound,
			`no Deployment, ReplicaSet or StatefulSet named "nope" in namespace default`},
		{"several services", &managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo", Port: "http"}, codes.FailedPrecondition,
			"several services (echo, echo-canary); say which with --service"},
		{"unknown service", &managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo", Service: "web"}, codes.FailedPrecondition,
			`service "web": not found among the services that select Deployment default/echo (echo, echo-canary)`},
		{"unknown port", &managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo", Service: "echo", Port: "grpc"}, codes.FailedPrecondition,
			`port identifier "grpc": not found: service echo has ports http (80/TCP), alt (81/TCP), dns (53/UDP)`},
		{"several ports", &managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo", Service: "echo"}, codes.FailedPrecondition,
			"service echo has several ports (http (80/TCP), alt (81/TCP), dns (53/UDP)); say which with --port LOCAL:ID"},
		{"intercepted by another client", &managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo", Service: "echo-canary"}, codes.FailedPrecondition,
			`Deployment default/echo port http (80/TCP) is already intercepted by alice@laptop (intercept "mine")`},
		{"intercepted by oneself", &managerv1.CreateInterceptRequest{SessionId: alice, Name: "again", Workload: "echo", Service: "echo", Port: "80"}, codes.FailedPrecondition,
			`already intercepted by you (intercept "mine")`},
		{"name used for another workload", &managerv1.CreateInterceptRequest{SessionId: alice, Name: "mine", Workload: "other"}, codes.FailedPrecondition,
			`you already use the intercept name "mine" for Deployment default/echo`},
		{"nothing to intercept", &managerv1.CreateInterceptRequest{SessionId: alice, Name: "lonely"}, codes.FailedPrecondition,
			"no service selects its pods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fc.create(tt.req, 5*time.Second)
			if status.Code(err) != tt.code || !errContains(err, tt.msg) {
				t.Errorf("error %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}
	// Only the first intercept exists.
	all, err := fc.client.ListIntercepts(context.Background(), &managerv1.ListInterceptsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.GetIntercepts()) != 1 || all.GetIntercepts()[0].GetName() != "mine" {
		t.Errorf("intercepts %v", all)
	}
}

// TestAgentDoesNotArrive checks that a CreateIntercept that waits in vain returns
// DeadlineExceeded within the client's deadline, saying why, and leaves nothing behind.
func TestAgentDoesNotArrive(t *testing.T) {
	waiting := func(reason, msg string) podStatus {
		return func(p *corev1.Pod) {
			running(p)
			for i := range p.Status.ContainerStatuses {
				if p.Status.ContainerStatuses[i].Name == inject.AgentContainerName {
					p.Status.ContainerStatuses[i].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
				}
			}
		}
	}
	tests := []struct {
		name        string
		skipWebhook bool
		status      podStatus
		noPod       bool
		want        string
	}{
		{
			name: "webhook not called", skipWebhook: true, status: running,
			want: "created without a traffic-agent and the agent injector was not called: check that the MutatingWebhookConfiguration teledock-agent-injector-teledock exists",
		},
		{
			name: "agent image missing", status: waiting("ErrImageNeverPull", `Container image "teledock/traffic-agent:test" is not present with pull policy of Never`),
			want: `container traffic-agent cannot get its image teledock/traffic-agent:test: ErrImageNeverPull`,
		},
		{
			name: "agent does not connect", status: running,
			want: "its traffic-agent runs but has not connected to the traffic-manager at traffic-manager.teledock:8081",
		},
		{name: "no pods", noPod: true, want: "it has no pods (replicas: 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := append(echoDeployment("echo"), echoService("echo", "echo"))
			fc := newFakeCluster(t, Config{}, objs...)
			client := fc.arriveClient("alice")
			fc.k8s.CoreV1().Events("default").Create(context.Background(), &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{Namespace: "default", Name: "ev1"},
				InvolvedObject: corev1.ObjectReference{Kind: "ReplicaSet", Name: "echo-abc"},
				Type:           corev1.EventTypeWarning, Reason: "FailedCreate", Message: "quota exceeded",
				LastTimestamp: metav1.Now(),
			}, metav1.CreateOptions{})
			if !tt.noPod {
				fc.startPod("echo-abc-old", "echo", true, running)
				go func() {
					if fc.rolledOut("echo") {
						fc.k8s.CoreV1().Pods("default").Delete(context.Background(), "echo-abc-old", metav1.DeleteOptions{})
						fc.startPod("echo-abc-1", "echo", tt.skipWebhook, tt.status)
					}
				}()
			}
			began := time.Now()
			_, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "echo", Replace: true}, 3*time.Second)
			if status.Code(err) != codes.DeadlineExceeded || !errContains(err, tt.want) {
				t.Errorf("error %v\nwant DeadlineExceeded containing %q", err, tt.want)
			}
			if !errContains(err, "ReplicaSet echo-abc: FailedCreate: quota exceeded") {
				t.Errorf("error %v does not quote the event", err)
			}
			if d := time.Since(began); d > 3*time.Second {
				t.Errorf("answered after %v, past the client's deadline", d)
			}
			all, _ := fc.client.ListIntercepts(context.Background(), &managerv1.ListInterceptsRequest{})
			if len(all.GetIntercepts()) != 0 {
				t.Errorf("intercepts left: %v", all)
			}
			// No agent came: the config and the rollout are taken back, so the workload is as it was.
			fc.waitUnrolled(t, "echo")
		})
	}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplace checks that --replace puts the container in the config's Replace list with a
// rollout, and that leaving the intercept rolls it back.
func TestReplace(t *testing.T) {
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	fc, _ := readyCluster(t, objs...)
	original, err := fc.m.store.AgentConfig(context.Background(), "default", "echo")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := canonical(original)
	client := fc.arriveClient("alice")

	done := make(chan error, 1)
	go func() {
		_, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "echo", Replace: true}, 10*time.Second)
		done <- err
	}()
	replaced := fc.awaitRollout("echo", "")
	pod := fc.startPod("echo-abc-2", "echo", false, running)
	cfg, _, err := podAgentConfig(pod)
	if err != nil || !slices.Equal(cfg.Replace, []string{"app"}) {
		t.Fatalf("replaced pod's config %+v, %v", cfg, err)
	}
	if i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == "app" }); pod.Spec.Containers[i].Image != testAgentImage {
		t.Errorf("app container runs %s, want the agent's placeholder", pod.Spec.Containers[i].Image)
	}
	fc.arriveAgent(pod)
	// Until the "controller" retires the old pod, which would still get part of the traffic, the
	// intercept waits.
	select {
	case err := <-done:
		t.Fatalf("CreateIntercept returned (%v) while the old pod still runs", err)
	case <-time.After(3 * drainPoll):
	}
	fc.k8s.CoreV1().Pods("default").Delete(context.Background(), "echo-abc-1", metav1.DeleteOptions{})
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	if _, err := fc.client.RemoveIntercept(context.Background(), &managerv1.RemoveInterceptRequest{SessionId: client, Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	if got, want := fc.awaitRollout("echo", replaced), rolloutValue(js); got != want {
		t.Errorf("rollout after remove %q, want the original config's %q", got, want)
	}
	stored, err := fc.m.store.AgentConfig(context.Background(), "default", "echo")
	if err != nil || len(stored.Replace) != 0 {
		t.Errorf("stored config after remove %+v, %v", stored, err)
	}
}

// TestSessionEndRemovesIntercepts checks that a departed client's intercepts go, and that its
// agents are told.
func TestSessionEndRemovesIntercepts(t *testing.T) {
	checkGoroutines(t)
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	fc, agent := readyCluster(t, objs...)
	client := fc.arriveClient("alice")
	info, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "echo"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	agent.awaitTargets(t, map[int32]string{8080: info.GetId()})
	if _, err := fc.client.Depart(context.Background(), &managerv1.SessionRequest{SessionId: client}); err != nil {
		t.Fatal(err)
	}
	agent.awaitTargets(t, map[int32]string{8080: ""})
	all, _ := fc.client.ListIntercepts(context.Background(), &managerv1.ListInterceptsRequest{})
	if len(all.GetIntercepts()) != 0 {
		t.Errorf("intercepts left: %v", all)
	}
	// The agent's session is not a client's.
	sessions, _ := fc.client.ListSessions(context.Background(), &managerv1.ListSessionsRequest{})
	if len(sessions.GetSessions()) != 0 {
		t.Errorf("sessions %v, want none (agents are not listed)", sessions)
	}
}

// TestSameClientSupersedes: a daemon killed without departing comes back as a new session of the
// same client (connection name, host, user); the old session and its intercepts end at once, so
// the new one intercepts the same workload right away. Another client is left alone.
func TestSameClientSupersedes(t *testing.T) {
	checkGoroutines(t)
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	fc, agent := readyCluster(t, objs...)
	bob := fc.arriveClient("bob")
	old := fc.arriveClient("alice")
	if _, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: old, Name: "echo"}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	fresh := fc.arriveClient("alice")
	_, err := fc.client.Remain(context.Background(), &managerv1.SessionRequest{SessionId: old})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Remain of the old session: %v, want NotFound", err)
	}
	agent.awaitTargets(t, map[int32]string{8080: ""})
	info, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: fresh, Name: "echo"}, 5*time.Second)
	if err != nil {
		t.Fatalf("the new session's intercept: %v", err)
	}
	agent.awaitTargets(t, map[int32]string{8080: info.GetId()})
	if _, err := fc.client.Remain(context.Background(), &managerv1.SessionRequest{SessionId: bob}); err != nil {
		t.Errorf("another client's session: %v", err)
	}
}

// TestToPod checks --to-pod: a client's Tunnel with an intercept id reaches the agent, which
// accepts it, and only for the listed ports.
func TestToPod(t *testing.T) {
	checkGoroutines(t)
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	fc, agent := readyCluster(t, objs...)
	client := fc.arriveClient("alice")
	info, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "echo",
		ToPod: []*managerv1.ToPod{{Port: 8081}}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dials := make(chan *managerv1.IncomingDial)
	got := make(chan *managerv1.Dial, 1)
	go serveAccepts(t, fc.agents, agent.session, dials, got)
	defer close(dials)
	go func() { dials <- agent.nextDial(t) }()

	dial := func(port uint16) (*tunnel.Conn, error) {
		return tunnel.DialStream(context.Background(), func(ctx context.Context) (tunnel.ClientStream, error) { return fc.client.Tunnel(ctx) },
			&managerv1.Dial{SessionId: client, InterceptId: info.GetId()}, "tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
	}
	c, err := dial(8081)
	if err != nil {
		t.Fatal(err)
	}
	if d := <-got; d.GetAddress() != "127.0.0.1:8081" || d.GetInterceptId() != info.GetId() {
		t.Errorf("agent got dial %v", d)
	}
	if s := echoOnce(t, c, "to the pod"); s != "to the pod" {
		t.Errorf("echo %q", s)
	}
	if _, err := dial(22); !errContains(err, "not a --to-pod port") {
		t.Errorf("dial to an unlisted port: %v", err)
	}
	// The volumes port is open only for an intercept whose agent serves mounts (e2e covers that).
	if len(info.GetMounts()) != 0 {
		t.Fatalf("mounts %v, want none", info.GetMounts())
	}
	if _, err := dial(agentconfig.VolumesPort); !errContains(err, "not a --to-pod port") {
		t.Errorf("dial to the volumes port of an intercept without mounts: %v", err)
	}
}

func TestListWorkloads(t *testing.T) {
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	objs = append(objs, echoDeployment("hidden", func(d *appsv1.Deployment) { d.Spec.Template.Labels["app"] = "nobody" })...)
	objs = append(objs, echoDeployment("annotated", func(d *appsv1.Deployment) {
		d.Spec.Template.Labels["app"] = "nobody"
		d.Spec.Template.Annotations = map[string]string{inject.LegacyAnnotationInjectPorts: "http"}
	})...)
	objs = append(objs, echoDeployment("bad", func(d *appsv1.Deployment) {
		d.Spec.Template.Labels["app"] = "nobody"
		d.Spec.Template.Annotations = map[string]string{inject.AnnotationInjectPorts: "grpc"}
	})...)
	objs = append(objs, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 5432}}}}},
			},
		},
	}, echoService("db", "db"))
	fc := newFakeCluster(t, Config{}, objs...)
	client := fc.arriveClient("alice")
	r, err := fc.client.ListWorkloads(context.Background(), &managerv1.ListWorkloadsRequest{SessionId: client})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range r.GetWorkloads() {
		got = append(got, w.GetKind()+"/"+w.GetName()+": "+w.GetState())
	}
	want := []string{
		"Deployment/annotated: ready to intercept (traffic-agent not yet installed)",
		`Deployment/bad: not interceptable: Deployment default/bad: annotation teledock.dev/inject-container-ports: container port not found: no container has a port named "grpc"`,
		"StatefulSet/db: ready to intercept (traffic-agent not yet installed)",
		"Deployment/echo: ready to intercept (traffic-agent not yet installed)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("workloads\n got %q\nwant %q", got, want)
	}
}

// TestServicelessIntercept checks that a service-less intercept reports the pod's address.
func TestServicelessIntercept(t *testing.T) {
	objs := echoDeployment("echo", func(d *appsv1.Deployment) {
		d.Spec.Template.Annotations = map[string]string{inject.LegacyAnnotationInjectPorts: "http"}
	})
	fc, _ := readyCluster(t, objs...)
	client := fc.arriveClient("alice")
	info, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "echo"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !info.GetServiceLess() || info.GetPodAddress() != "10.244.0.9:8080" || info.GetServicePortIdentifier() != "http" || info.GetService() != "" {
		t.Errorf("service-less intercept %v", info)
	}
}

func TestChooseTarget(t *testing.T) {
	svc := func(name, port string, number uint16, proto agentconfig.Protocol, container uint16) agentconfig.Target {
		return agentconfig.Target{ServiceName: name, ServicePortName: port, ServicePort: number, Protocol: proto,
			ContainerName: "app", ContainerPort: container}
	}
	annotated := agentconfig.Target{ContainerName: "app", ContainerPortName: "metrics", ContainerPort: 9090, Protocol: agentconfig.TCP}
	dnsTCP, dnsUDP := svc("dns", "", 53, agentconfig.TCP, 5353), svc("dns", "", 53, agentconfig.UDP, 5353)
	tests := []struct {
		name          string
		targets       []agentconfig.Target
		service, port string
		want          agentconfig.Target
		wantErr       error
	}{
		{"only port", []agentconfig.Target{svc("web", "http", 80, agentconfig.TCP, 8080)}, "", "", svc("web", "http", 80, agentconfig.TCP, 8080), nil},
		{"by number", []agentconfig.Target{svc("web", "http", 80, agentconfig.TCP, 8080), svc("web", "grpc", 90, agentconfig.TCP, 9000)}, "", "90", svc("web", "grpc", 90, agentconfig.TCP, 9000), nil},
		{"TCP before UDP", []agentconfig.Target{dnsUDP, dnsTCP}, "", "53", dnsTCP, nil},
		{"the only TCP port", []agentconfig.Target{svc("web", "udp", 8081, agentconfig.UDP, 8081), svc("web", "http", 80, agentconfig.TCP, 8080)}, "", "", svc("web", "http", 80, agentconfig.TCP, 8080), nil},
		{"UDP by name", []agentconfig.Target{svc("web", "udp", 8081, agentconfig.UDP, 8081), svc("web", "http", 80, agentconfig.TCP, 8080)}, "", "udp", svc("web", "udp", 8081, agentconfig.UDP, 8081), nil},
		{"several TCP ports", []agentconfig.Target{svc("web", "http", 80, agentconfig.TCP, 8080), svc("web", "grpc", 90, agentconfig.TCP, 9000)}, "", "", agentconfig.Target{}, errAmbiguous},
		{"port narrows services", []agentconfig.Target{svc("web", "http", 80, agentconfig.TCP, 8080), svc("admin", "admin", 81, agentconfig.TCP, 8081)}, "", "admin", svc("admin", "admin", 81, agentconfig.TCP, 8081), nil},
		{"annotated", []agentconfig.Target{annotated}, "", "metrics", annotated, nil},
		{"service and annotation", []agentconfig.Target{svc("web", "http", 80, agentconfig.TCP, 8080), annotated}, "", "", agentconfig.Target{}, errAmbiguous},
		{"unknown port", []agentconfig.Target{svc("web", "http", 80, agentconfig.TCP, 8080)}, "", "8080", agentconfig.Target{}, errNoPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseTarget(agentconfig.Config{Targets: tt.targets}, "Deployment default/x", tt.service, tt.port)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestReconcileAfterRestart checks that a new manager restores a workload that an intercept of
// the previous one left replaced, once its clients had time to come back, and leaves one that a
// client claimed again.
func TestReconcileAfterRestart(t *testing.T) {
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	objs = append(objs, echoDeployment("kept")...)
	objs = append(objs, echoService("kept", "kept"))
	objs = append(objs, echoDeployment("others")...)
	objs = append(objs, echoService("others", "others"))
	fc := newFakeCluster(t, Config{ReconcileAfter: 200 * time.Millisecond}, objs...)
	ctx := context.Background()
	for _, name := range []string{"echo", "kept", "others"} {
		wl, err := workload.Get(ctx, fc.k8s, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := fc.m.plan(ctx, wl)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Replace = []string{"app"}
		if name == "others" {
			// Another traffic-manager's (another install's) intercept: not this one's to undo.
			cfg.ManagerAddress = "traffic-manager.team-b:8081"
		}
		if err := fc.m.store.Put(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	// A client comes back and replaces "kept" again (its agent runs the replaced config).
	kept := fc.startPod("kept-abc-1", "kept", false, running)
	fc.arriveAgent(kept)
	client := fc.arriveClient("alice")
	if _, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "kept", Replace: true}, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		fc.m.Run(rctx)
		close(done)
	}()
	defer func() {
		stop()
		<-done
	}()
	waitFor(t, func() bool {
		cfg, err := fc.m.store.AgentConfig(ctx, "default", "echo")
		return err == nil && len(cfg.Replace) == 0
	})
	cfg, err := fc.m.store.AgentConfig(ctx, "default", "kept")
	if err != nil || !slices.Equal(cfg.Replace, []string{"app"}) {
		t.Errorf("claimed workload's config %+v, %v; want it still replaced", cfg.Replace, err)
	}
	cfg, err = fc.m.store.AgentConfig(ctx, "default", "others")
	if err != nil || !slices.Equal(cfg.Replace, []string{"app"}) {
		t.Errorf("another manager's config %+v, %v; want it left alone", cfg.Replace, err)
	}
}

// TestDepartWhileWaiting checks that a CreateIntercept waiting for its agent ends when its
// client departs, and leaves no intercept.
func TestDepartWhileWaiting(t *testing.T) {
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	fc := newFakeCluster(t, Config{}, objs...)
	fc.startPod("echo-abc-old", "echo", true, running)
	client := fc.arriveClient("alice")
	done := make(chan error, 1)
	go func() {
		_, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: client, Name: "echo"}, 10*time.Second)
		done <- err
	}()
	fc.awaitRollout("echo", "")
	began := time.Now()
	if _, err := fc.client.Depart(context.Background(), &managerv1.SessionRequest{SessionId: client}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; status.Code(err) != codes.NotFound || !errContains(err, "departed") {
		t.Errorf("CreateIntercept: %v, want NotFound (session departed)", err)
	}
	if d := time.Since(began); d > time.Second {
		t.Errorf("ended %v after the depart", d)
	}
	all, _ := fc.client.ListIntercepts(context.Background(), &managerv1.ListInterceptsRequest{})
	if len(all.GetIntercepts()) != 0 {
		t.Errorf("intercepts left: %v", all)
	}
	// The abandoned first intercept takes back its config and rollout, as a timed-out one does.
	fc.waitUnrolled(t, "echo")
}

// waitUnrolled waits until the Deployment of the default namespace has neither an agent config nor
// the rollout annotation: as it was before its first intercept.
func (fc *fakeCluster) waitUnrolled(t *testing.T, name string) {
	t.Helper()
	waitFor(t, func() bool {
		_, err := fc.m.store.AgentConfig(context.Background(), "default", name)
		if !errors.Is(err, inject.ErrNoConfig) {
			return false
		}
		d, err := fc.k8s.AppsV1().Deployments("default").Get(context.Background(), name, metav1.GetOptions{})
		_, annotated := d.Spec.Template.Annotations[workload.AnnotationRollout]
		return err == nil && !annotated
	})
}

func TestDrained(t *testing.T) {
	endpoint := func(pod string, ready bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{"10.244.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod}}
	}
	tests := []struct {
		name      string
		oldPod    bool // a pod without the agent
		deleting  bool // ... being deleted
		endpoints []discoveryv1.Endpoint
		want      bool
	}{
		{name: "no slices", want: true},
		{name: "old pod running", oldPod: true, want: false},
		{name: "old pod still a ready endpoint", oldPod: true, deleting: true,
			endpoints: []discoveryv1.Endpoint{endpoint("echo-abc-old", true), endpoint("echo-abc-1", true)}, want: false},
		{name: "old pod terminating", oldPod: true, deleting: true,
			endpoints: []discoveryv1.Endpoint{endpoint("echo-abc-old", false), endpoint("echo-abc-1", true)}, want: true},
		{name: "new pod not ready yet",
			endpoints: []discoveryv1.Endpoint{endpoint("echo-abc-1", false)}, want: false},
		{name: "another workload's pod",
			endpoints: []discoveryv1.Endpoint{endpoint("other-1", true), endpoint("echo-abc-1", true)}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := append(echoDeployment("echo"), echoService("echo", "echo"))
			fc, _ := readyCluster(t, objs...)
			ctx := context.Background()
			if tt.oldPod {
				fc.startPod("echo-abc-old", "echo", true, func(p *corev1.Pod) {
					running(p)
					if tt.deleting {
						now := metav1.Now()
						p.DeletionTimestamp = &now
					}
				})
			}
			if tt.endpoints != nil {
				fc.k8s.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
					ObjectMeta:  metav1.ObjectMeta{Name: "echo-x", Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
					AddressType: discoveryv1.AddressTypeIPv4, Endpoints: tt.endpoints,
				}, metav1.CreateOptions{})
			}
			wl, _ := workload.Get(ctx, fc.k8s, "default", "echo")
			cfg, _ := fc.m.store.AgentConfig(ctx, "default", "echo")
			js, _ := canonical(cfg)
			got, err := fc.m.drained(ctx, wl, cfg.Targets[0], js)
			if err != nil || got != tt.want {
				t.Errorf("drained = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestServedMounts(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "app"},
		{Name: inject.AgentContainerName, Env: []corev1.EnvVar{{Name: agentconfig.EnvMounts,
			Value: `[{"container":"app","path":"/etc/config","readOnly":true},{"container":"other","path":"/x"},{"container":"app","path":"/cache"}]`}}},
	}}}
	got := servedMounts(pod, "app")
	if len(got) != 2 || got[0].GetPath() != "/etc/config" || !got[0].GetReadOnly() || got[1].GetPath() != "/cache" || got[1].GetReadOnly() {
		t.Errorf("servedMounts = %v", got)
	}
	if got := servedMounts(&corev1.Pod{}, "app"); got != nil {
		t.Errorf("a pod without an agent: %v", got)
	}
}
