package manager

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

// A fake cluster for the intercept tests: Deployments with one ReplicaSet each, whose pods the
// tests create (the fake has no controllers) through the manager's own admission handler.

const testAgentImage = "teledock/traffic-agent:test"

var yes = true

type fakeCluster struct {
	tb     testing.TB
	k8s    *fake.Clientset
	m      *Manager
	client managerv1.ManagerClient // the clients' endpoint
	agents managerv1.ManagerClient // the agents' endpoint (the Service's)
}

func newFakeCluster(tb testing.TB, cfg Config, objs ...runtime.Object) *fakeCluster {
	tb.Helper()
	return newFakeClusterLog(tb, testLogger(tb), cfg, objs...)
}

// newFakeClusterLog is newFakeCluster with the manager logging to log.
func newFakeClusterLog(tb testing.TB, log *slog.Logger, cfg Config, objs ...runtime.Object) *fakeCluster {
	tb.Helper()
	if cfg.Namespace == "" {
		cfg.Namespace = "teledock"
	}
	if cfg.AgentImage == "" {
		cfg.AgentImage = testAgentImage
	}
	k8s := fake.NewClientset(objs...)
	k8s.PrependReactor("create", "tokenreviews", reviewTestTokens)
	m, err := New(cfg, k8s, log)
	if err != nil {
		tb.Fatal(err)
	}
	return &fakeCluster{tb: tb, k8s: k8s, m: m, client: serveGRPC(tb, m), agents: serveGRPC(tb, m, m.AgentEndpointOptions()...)}
}

// echoDeployment is a Deployment "name" whose container "app" serves the named port http (8080)
// and a UDP port dns (5353), with its ReplicaSet "name-abc".
func echoDeployment(name string, mutate ...func(*appsv1.Deployment)) []runtime.Object {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("dep-" + name)},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "echo",
					Ports: []corev1.ContainerPort{
						{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
						{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
					},
					Env: []corev1.EnvVar{{Name: "GREETING", Value: "hello from $(ECHO_SERVICE_HOST)"}},
				}}},
			},
		},
	}
	for _, f := range mutate {
		f(d)
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: name + "-abc", UID: types.UID("rs-" + name),
			Labels:          map[string]string{"app": name, "pod-template-hash": "abc"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: d.UID, Controller: &yes}},
		},
		Spec: appsv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template},
	}
	return []runtime.Object{d, rs}
}

// echoService selects the pods of workload app and sends port 80 to their named port http.
func echoService(name, app string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("svc-" + name)},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": app}, ClusterIP: "10.96.0.80", ClusterIPs: []string{"10.96.0.80"},
			Ports: ports,
		},
	}
}

// podStatus makes a pod look as the kubelet would report it.
type podStatus func(*corev1.Pod)

func running(p *corev1.Pod) {
	p.Status.Phase = corev1.PodRunning
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		})
	}
}

// startPod creates a pod of the Deployment's ReplicaSet as the controller would, with the
// template's current annotations, and admits it through the manager's webhook handler unless
// skipWebhook is set.
func (fc *fakeCluster) startPod(name, workloadName string, skipWebhook bool, st podStatus) *corev1.Pod {
	fc.tb.Helper()
	ctx := context.Background()
	d, err := fc.k8s.AppsV1().Deployments("default").Get(ctx, workloadName, metav1.GetOptions{})
	if err != nil {
		fc.tb.Fatal(err)
	}
	tmpl := d.Spec.Template.DeepCopy()
	labels := tmpl.Labels
	labels["pod-template-hash"] = "abc"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: name, UID: types.UID("pod-" + name),
			Labels: labels, Annotations: tmpl.Annotations, CreationTimestamp: metav1.Now(),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: workloadName + "-abc", UID: types.UID("rs-" + workloadName), Controller: &yes}},
		},
		Spec: tmpl.Spec,
	}
	if !skipWebhook {
		pod = fc.admit(pod)
	}
	pod.Status.PodIP = "10.244.0.9"
	pod.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.9"}}
	if st != nil {
		st(pod)
	}
	pod, err = fc.k8s.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		fc.tb.Fatal(err)
	}
	return pod
}

// admit runs the pod through the manager's admission handler and applies its patch.
func (fc *fakeCluster) admit(pod *corev1.Pod) *corev1.Pod {
	fc.tb.Helper()
	h, err := inject.NewAdmissionHandler(testLogger(fc.tb), fc.m.AgentConfigs(), "teledock")
	if err != nil {
		fc.tb.Fatal(err)
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		fc.tb.Fatal(err)
	}
	resp := h.Review(context.Background(), &admissionv1.AdmissionRequest{
		UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create,
		Namespace: pod.Namespace, Object: runtime.RawExtension{Raw: raw},
	})
	if len(resp.Patch) == 0 {
		return pod
	}
	// The fake applies JSON patches the way the API server does; a scratch pod carries it out.
	scratch := fake.NewClientset(pod)
	out, err := scratch.CoreV1().Pods(pod.Namespace).Patch(context.Background(), pod.Name, types.JSONPatchType, resp.Patch, metav1.PatchOptions{})
	if err != nil {
		fc.tb.Fatalf("apply admission patch: %v\n%s", err, resp.Patch)
	}
	return out
}

// rolloutValue returns the Deployment's rollout annotation, waiting up to a few seconds for it to
// differ from not.
func (fc *fakeCluster) awaitRollout(workloadName, not string) string {
	fc.tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := fc.k8s.AppsV1().Deployments("default").Get(context.Background(), workloadName, metav1.GetOptions{})
		if err != nil {
			fc.tb.Fatal(err)
		}
		if v := d.Spec.Template.Annotations[workload.AnnotationRollout]; v != not {
			return v
		}
		if time.Now().After(deadline) {
			fc.tb.Fatalf("no rollout of %s (annotation still %q)", workloadName, not)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkGoroutines fails the test if goroutines outlive it. Register it first so that its cleanup
// runs last.
func checkGoroutines(tb testing.TB) {
	tb.Helper()
	before := goruntime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for goruntime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				tb.Errorf("goroutines: %d before, %d after\n%s", before, goruntime.NumGoroutine(), buf[:goruntime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// rolledOut waits up to a few seconds for the Deployment's first rollout, without failing the
// test (it runs in a goroutine).
func (fc *fakeCluster) rolledOut(workloadName string) bool {
	for range 500 {
		d, err := fc.k8s.AppsV1().Deployments("default").Get(context.Background(), workloadName, metav1.GetOptions{})
		if err == nil && d.Spec.Template.Annotations[workload.AnnotationRollout] != "" {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func (fc *fakeCluster) arriveClient(name string) string {
	fc.tb.Helper()
	s, err := fc.client.ArriveClient(context.Background(), &managerv1.ClientInfo{Name: name, Hostname: "laptop", Namespace: "default"})
	if err != nil {
		fc.tb.Fatal(err)
	}
	return s.GetSessionId()
}

// fakeAgent is a traffic-agent that arrived for a pod and watches its updates.
type fakeAgent struct {
	session string
	updates chan *managerv1.AgentUpdate
	last    []*managerv1.AgentTarget // the latest targets read
}

// arriveAgent arrives as an agent of this version, with its capabilities.
func (fc *fakeCluster) arriveAgent(pod *corev1.Pod) *fakeAgent {
	fc.tb.Helper()
	return fc.arriveAgentWith(pod, "", managerv1.AgentCapability_AGENT_CAPABILITY_HTTP_FILTERS)
}

// arriveAgentWith arrives as an agent of that version (empty: none said) and capabilities.
func (fc *fakeCluster) arriveAgentWith(pod *corev1.Pod, version string, capabilities ...managerv1.AgentCapability) *fakeAgent {
	fc.tb.Helper()
	s, err := fc.agents.ArriveAgent(podToken(pod.Namespace, pod.Name), &managerv1.AgentInfo{PodName: pod.Name, Namespace: pod.Namespace, PodIp: pod.Status.PodIP,
		Version: version, Capabilities: capabilities})
	if err != nil {
		fc.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fc.tb.Cleanup(cancel)
	w, err := fc.agents.WatchAgent(ctx, &managerv1.SessionRequest{SessionId: s.GetSessionId()})
	if err != nil {
		fc.tb.Fatal(err)
	}
	a := &fakeAgent{session: s.GetSessionId(), updates: make(chan *managerv1.AgentUpdate, 16)}
	go func() {
		defer close(a.updates)
		for {
			u, err := w.Recv()
			if err != nil {
				return
			}
			a.updates <- u
		}
	}()
	return a
}

// nextTargets returns the next targets update, skipping dials.
func (a *fakeAgent) nextTargets(tb testing.TB) []*managerv1.AgentTarget {
	tb.Helper()
	for {
		select {
		case u, ok := <-a.updates:
			if !ok {
				tb.Fatal("agent's watch ended")
			}
			if u.GetDial() == nil {
				a.last = u.GetTargets()
				return a.last
			}
		case <-time.After(5 * time.Second):
			tb.Fatal("no targets update")
		}
	}
}

func (a *fakeAgent) nextDial(tb testing.TB) *managerv1.IncomingDial {
	tb.Helper()
	for {
		select {
		case u, ok := <-a.updates:
			if !ok {
				tb.Fatal("agent's watch ended")
			}
			if d := u.GetDial(); d != nil {
				return d
			}
		case <-time.After(5 * time.Second):
			tb.Fatal("no dial update")
		}
	}
}

// awaitTargets reads targets updates until the agent's targets are want (target port to
// intercept id).
func (a *fakeAgent) awaitTargets(tb testing.TB, want map[int32]string) {
	tb.Helper()
	for got := interceptedPorts(a.last); !maps.Equal(got, want); got = interceptedPorts(a.nextTargets(tb)) {
	}
}

// interceptedPorts maps agent targets' target ports to their intercept ids ("" for none).
func interceptedPorts(ts []*managerv1.AgentTarget) map[int32]string {
	out := make(map[int32]string)
	for _, t := range ts {
		out[t.GetTargetPort()] = t.GetInterceptId()
	}
	return out
}

// serveAccepts accepts every connection offered on a WatchDials or WatchAgent stream (dials) as
// session, and echoes each one: it answers the dial, sends back what it receives, and half-closes
// when the initiator does.
func serveAccepts(tb testing.TB, client managerv1.ManagerClient, session string, dials <-chan *managerv1.IncomingDial, got chan<- *managerv1.Dial) {
	for d := range dials {
		go func() {
			s, err := client.Accept(context.Background())
			if err != nil {
				return
			}
			s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: session, ConnId: d.GetConnId()}}})
			m, err := s.Recv()
			if err != nil {
				tb.Errorf("acceptor: %v", err)
				return
			}
			if got != nil {
				got <- m.GetDial()
			}
			s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}})
			for {
				m, err := s.Recv()
				if err != nil {
					return
				}
				data := m.GetData()
				s.Send(m)
				if data.GetCloseWrite() {
					s.CloseSend()
					for {
						if _, err := s.Recv(); err != nil {
							return
						}
					}
				}
			}
		}()
	}
}

// watchDials streams a client's IncomingDials into a channel.
func watchDials(tb testing.TB, client managerv1.ManagerClient, session string) <-chan *managerv1.IncomingDial {
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	w, err := client.WatchDials(ctx, &managerv1.SessionRequest{SessionId: session})
	if err != nil {
		tb.Fatal(err)
	}
	out := make(chan *managerv1.IncomingDial)
	go func() {
		defer close(out)
		for {
			d, err := w.Recv()
			if err != nil {
				return
			}
			out <- d
		}
	}()
	return out
}

// echoOnce writes msg through c, half-closes, and returns all it reads back.
func echoOnce(tb testing.TB, c interface {
	io.ReadWriter
	CloseWrite() error
	Close() error
}, msg string) string {
	tb.Helper()
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		tb.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		tb.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func errContains(err error, want string) bool {
	return err != nil && strings.Contains(err.Error(), want)
}

// podToken is a context whose calls carry the test token of the pod, as its agent's would.
func podToken(namespace, name string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer pod:"+namespace+"/"+name+".payload.signature")
}

// reviewTestTokens plays the API server's TokenReview: "pod:NS/NAME" is a token of NS's default
// ServiceAccount bound to pod NAME, for the manager's audience; "sa:NS" one of that ServiceAccount
// bound to no pod; "aud:NS/NAME" one bound to the pod but for the API server's audience only;
// anything else is refused.
func reviewTestTokens(action k8stesting.Action) (bool, runtime.Object, error) {
	tr := action.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
	if ns, ok := strings.CutPrefix(strings.TrimSuffix(tr.Spec.Token, ".payload.signature"), "sa:"); ok {
		tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
			User: authnv1.UserInfo{Username: "system:serviceaccount:" + ns + ":default"}}
		return true, tr, nil
	}
	if rest, ok := strings.CutPrefix(strings.TrimSuffix(tr.Spec.Token, ".payload.signature"), "aud:"); ok {
		ns, name, _ := strings.Cut(rest, "/")
		tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"},
			User: authnv1.UserInfo{Username: "system:serviceaccount:" + ns + ":default", Extra: map[string]authnv1.ExtraValue{podNameKey: {name}}}}
		return true, tr, nil
	}
	ns, name, ok := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(tr.Spec.Token, "pod:"), ".payload.signature"), "/")
	if !strings.HasPrefix(tr.Spec.Token, "pod:") || !ok || !slices.Contains(tr.Spec.Audiences, agentconfig.TokenAudience) {
		tr.Status = authnv1.TokenReviewStatus{Error: "invalid token"}
		return true, tr, nil
	}
	tr.Status = authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     tr.Spec.Audiences,
		User: authnv1.UserInfo{
			Username: "system:serviceaccount:" + ns + ":default",
			Extra:    map[string]authnv1.ExtraValue{podNameKey: {name}},
		},
	}
	return true, tr, nil
}
