package manager

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/workload"
)

func header(name, value string) *managerv1.HttpFilter {
	return &managerv1.HttpFilter{Headers: []*managerv1.HttpHeaderMatch{{Name: name, Value: value}}}
}

func pathPrefix(p string) *managerv1.HttpFilter {
	return &managerv1.HttpFilter{Path: &managerv1.HttpFilter_PathPrefix{PathPrefix: p}}
}

func TestConflictWith(t *testing.T) {
	alice := header("x-dev", "alice")
	tests := []struct {
		name         string
		existing     *intercept
		filter       *managerv1.HttpFilter
		wiretap      bool
		want         bool
		detail       string // in the message
		needsRouting bool   // calls into httproute
	}{
		{"whole vs whole", &intercept{}, nil, false, true, "", false},
		{"whole vs filtered", &intercept{}, alice, false, true, "", false},
		{"whole vs wiretap", &intercept{}, nil, true, false, "", false},
		{"wiretap vs whole", &intercept{wiretap: true}, nil, false, false, "", false},
		{"wiretap vs filtered wiretap", &intercept{wiretap: true, filter: alice}, alice, true, false, "", false},
		{"filtered wiretap vs same filter", &intercept{wiretap: true, filter: alice}, alice, false, false, "", false},
		{"plaintext only is whole", &intercept{filter: &managerv1.HttpFilter{Plaintext: true}}, alice, false, true, "", false},
		{"filtered vs whole", &intercept{filter: alice}, nil, false, true, "without --http-header", true},
		{"filtered vs plaintext only", &intercept{filter: alice}, &managerv1.HttpFilter{Plaintext: true}, false, true, "without --http-header", true},
		{"different header values", &intercept{filter: alice}, header("x-dev", "bob"), false, false, "", true},
		{"same header value", &intercept{filter: alice}, header("X-Dev", "alice"), false, true, "could match together", true},
		{"regex value overlaps", &intercept{filter: alice}, header("x-dev", "a.*"), false, true, "could match together", true},
		{"other header overlaps", &intercept{filter: alice}, header("x-team", "blue"), false, true, "could match together", true},
		{"disjoint prefixes", &intercept{filter: pathPrefix("/api")}, pathPrefix("/web"), false, false, "", true},
		{"nested prefixes", &intercept{filter: pathPrefix("/api")}, pathPrefix("/api/v2"), false, true, "could match together", true},
		{"header vs path", &intercept{filter: alice}, pathPrefix("/api"), false, true, "could match together", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needsRouting {
			}
			got, detail := conflictWith(tt.existing, tt.filter, tt.wiretap)
			if got != tt.want || !strings.Contains(detail, tt.detail) {
				t.Errorf("conflictWith = %v %q, want %v with %q", got, detail, tt.want, tt.detail)
			}
			if !got && detail != "" {
				t.Errorf("no conflict but a reason: %q", detail)
			}
		})
	}
}

// TestWiretapAndCounters: a wiretap shares its port with an intercept of whole connections; the
// agent gets one target per intercept; the counters it reports show in InterceptInfo.
func TestWiretapAndCounters(t *testing.T) {
	checkGoroutines(t)
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	fc, agent := readyCluster(t, objs...)
	alice, bob := fc.arriveClient("alice"), fc.arriveClient("bob")
	whole, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: alice, Name: "echo"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if whole.GetCounters() != nil || whole.GetHttpFilter() != "" || whole.GetWiretap() {
		t.Errorf("an intercept of whole connections shows filter or counters: %v", whole)
	}
	tap, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: bob, Name: "tap", Workload: "echo", Wiretap: true}, 5*time.Second)
	if err != nil {
		t.Fatalf("a wiretap of an intercepted port: %v", err)
	}
	if !tap.GetWiretap() || tap.GetCounters() == nil {
		t.Errorf("wiretap info %v", tap)
	}
	// A second intercept of whole connections is still refused, by the first only.
	_, err = fc.create(&managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo"}, 5*time.Second)
	if status.Code(err) != codes.FailedPrecondition || !errContains(err, `already intercepted by alice@laptop (intercept "echo")`) {
		t.Errorf("second whole intercept: %v", err)
	}

	var targets []*managerv1.AgentTarget
	waitFor(t, func() bool {
		targets = fc.m.agentTargets(fc.m.agentsOf(workloadKey{"default", "Deployment", "echo"}, "")[0].agent)
		return len(targets) == 2
	})
	byID := map[string]*managerv1.AgentTarget{}
	for _, at := range targets {
		byID[at.GetInterceptId()] = at
	}
	if at := byID[whole.GetId()]; at == nil || at.GetWiretap() || at.GetHttpFilter() != nil || at.GetAgentPort() != byID[tap.GetId()].GetAgentPort() {
		t.Errorf("targets %v", targets)
	}
	if at := byID[tap.GetId()]; at == nil || !at.GetWiretap() {
		t.Errorf("targets %v", targets)
	}

	report := func(c *managerv1.InterceptCounters) {
		t.Helper()
		_, err := fc.agents.ReportCounters(context.Background(), &managerv1.AgentCounters{SessionId: agent.session, Intercepts: []*managerv1.AgentInterceptCounters{
			{InterceptId: tap.GetId(), Counters: c},
			{InterceptId: "gone", Counters: c},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	report(&managerv1.InterceptCounters{Copied: 5, Dropped: 1})
	report(&managerv1.InterceptCounters{Copied: 7, Dropped: 2}) // totals: the latest replaces
	list, err := fc.client.ListIntercepts(context.Background(), &managerv1.ListInterceptsRequest{SessionId: bob})
	if err != nil {
		t.Fatal(err)
	}
	want := &managerv1.InterceptCounters{Copied: 7, Dropped: 2}
	if got := list.GetIntercepts()[0].GetCounters(); !proto.Equal(got, want) {
		t.Errorf("counters %v, want %v", got, want)
	}
	// Clients may not report.
	if _, err := fc.client.ReportCounters(context.Background(), &managerv1.AgentCounters{SessionId: alice}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a client's report: %v, want PermissionDenied", err)
	}
}

// TestFilteredIntercepts: personal intercepts of one port coexist while their filters are
// disjoint; overlaps, whole intercepts, bad filters, --replace and UDP ports are refused.
func TestFilteredIntercepts(t *testing.T) {
	checkGoroutines(t)
	objs := append(echoDeployment("echo"), echoService("echo", "echo",
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "dns", Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP}))
	fc, _ := readyCluster(t, objs...)
	alice, bob, carol := fc.arriveClient("alice"), fc.arriveClient("bob"), fc.arriveClient("carol")
	a, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: alice, Name: "echo", Port: "http", HttpFilter: header("x-dev", "alice")}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetHttpFilter() != "header x-dev=alice" || !proto.Equal(a.GetFilter(), header("x-dev", "alice")) || a.GetCounters() == nil {
		t.Errorf("filtered info %v", a)
	}
	b, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo", Port: "http", HttpFilter: header("x-dev", "bob")}, 5*time.Second)
	if err != nil {
		t.Fatalf("a disjoint filter on the same port: %v", err)
	}

	tests := []struct {
		name string
		req  *managerv1.CreateInterceptRequest
		code codes.Code
		msg  string
	}{
		// a.* overlaps alice's filter and bob's: either may be named, whichever claim meets first.
		{"overlapping filter", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http", HttpFilter: header("x-dev", "a.*")},
			codes.FailedPrecondition, `, which a request could match together with yours (header x-dev=a.*)`},
		// The literal value overlaps alice's filter only.
		{"alice's filter", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http", HttpFilter: header("X-Dev", "alice")},
			codes.FailedPrecondition, `already intercepted by alice@laptop (intercept "echo", HTTP filter header x-dev=alice, which a request could match`},
		{"whole", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http"},
			codes.FailedPrecondition, "without --http-header or --http-path filters"},
		{"replace", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http", Replace: true, HttpFilter: header("x-dev", "carol")},
			codes.InvalidArgument, "--replace cannot be combined"},
		{"replace wiretap", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http", Replace: true, Wiretap: true},
			codes.InvalidArgument, "--replace cannot be combined"},
		{"bad header regex", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http", HttpFilter: header("x-dev", "(")},
			codes.InvalidArgument, "--http-header x-dev=("},
		{"bad path regex", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http",
			HttpFilter: &managerv1.HttpFilter{Path: &managerv1.HttpFilter_PathRegex{PathRegex: "/a("}}}, codes.InvalidArgument, "--http-path-regex /a("},
		{"empty path", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http",
			HttpFilter: &managerv1.HttpFilter{Path: &managerv1.HttpFilter_PathEqual{}}}, codes.InvalidArgument, "--http-path-equal with an empty path"},
		{"UDP port", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "dns", Workload: "echo", Port: "dns", HttpFilter: header("x-dev", "carol")},
			codes.InvalidArgument, "TCP ports only, and port dns (53/UDP) is UDP"},
		{"UDP wiretap", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "dns", Workload: "echo", Port: "dns", Wiretap: true},
			codes.InvalidArgument, "TCP ports only"},
		// Another port of the same container: replacing it would stop the app that answers what
		// alice's and bob's filters do not take.
		{"replace another port", &managerv1.CreateInterceptRequest{SessionId: carol, Name: "dns", Workload: "echo", Port: "dns", Replace: true},
			codes.FailedPrecondition, "--replace would stop container app, whose app answers the requests intercept"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fc.create(tt.req, 5*time.Second)
			if status.Code(err) != tt.code || !errContains(err, tt.msg) {
				t.Errorf("error %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}

	// A wiretap with the same filter as alice's does not conflict; carol's disjoint one neither.
	tap, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: carol, Name: "tap", Workload: "echo", Port: "http", Wiretap: true, HttpFilter: header("x-dev", "alice")}, 5*time.Second)
	if err != nil {
		t.Fatalf("wiretap: %v", err)
	}
	c, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http", HttpFilter: pathPrefix("/carol")}, 5*time.Second)
	if err == nil || !errContains(err, "could match together") {
		t.Errorf("a path filter beside header filters is not provably disjoint: %v %v", c, err)
	}

	var targets []*managerv1.AgentTarget
	waitFor(t, func() bool {
		targets = fc.m.agentTargets(fc.m.agentsOf(workloadKey{"default", "Deployment", "echo"}, "")[0].agent)
		return len(targets) == 4 // three on 8080, the UDP port to the app
	})
	got := map[string]string{}
	for _, at := range targets {
		got[at.GetInterceptId()] = describeFilter(at.GetHttpFilter())
		if at.GetWiretap() {
			got[at.GetInterceptId()] += " (wiretap)"
		}
	}
	want := map[string]string{a.GetId(): "header x-dev=alice", b.GetId(): "header x-dev=bob", tap.GetId(): "header x-dev=alice (wiretap)", "": ""}
	if len(got) != len(want) {
		t.Fatalf("targets %v", targets)
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("target of %q: %q, want %q", id, got[id], w)
		}
	}

	// Once alice leaves, her filter is free for another.
	if _, err := fc.client.RemoveIntercept(context.Background(), &managerv1.RemoveInterceptRequest{SessionId: alice, Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: carol, Name: "echo", Port: "http", HttpFilter: header("x-dev", "alice")}, 5*time.Second); err != nil {
		t.Errorf("after the overlapping intercept left: %v", err)
	}
}

// interceptsOf reads the agent's targets updates until the intercept ids of the targets of app
// port 8080 ("" for the app) are want, in the manager's order.
func interceptsOf(tb testing.TB, a *fakeAgent, want ...string) {
	tb.Helper()
	ids := func(ts []*managerv1.AgentTarget) []string {
		var out []string
		for _, at := range ts {
			if at.GetTargetPort() == 8080 {
				out = append(out, at.GetInterceptId())
			}
		}
		return out
	}
	slices.Sort(want)
	got := ids(a.last)
	timeout := time.After(5 * time.Second)
	for !slices.Equal(got, want) {
		select {
		case u, ok := <-a.updates:
			if !ok {
				tb.Fatal("agent's watch ended")
			}
			if u.GetDial() == nil {
				a.last = u.GetTargets()
				got = ids(a.last)
			}
		case <-timeout:
			tb.Fatalf("intercepts of port 8080: %q, want %q", got, want)
		}
	}
}

// TestOldAgents: an agent of an older version, which given several targets for a port keeps the
// last and ignores its filter, gets no filtered intercept or wiretap: CreateIntercept refuses
// them while such an agent runs the workload's config, saying how to get the current agent, and
// such an agent (one that arrives later) gets no more of a port than its intercept of whole
// connections.
func TestOldAgents(t *testing.T) {
	checkGoroutines(t)
	ctx := context.Background()
	objs := append(echoDeployment("echo"), echoService("echo", "echo"))
	fc, pod := readyPod(t, objs...)
	old := fc.arriveAgentWith(pod, "v0.9.0")
	alice, bob := fc.arriveClient("alice"), fc.arriveClient("bob")
	const fix = "; restart the workload to get the current agent (kubectl rollout restart deployment/echo -n default)"

	for _, req := range []*managerv1.CreateInterceptRequest{
		{SessionId: alice, Name: "echo", HttpFilter: header("x-dev", "alice")},
		{SessionId: alice, Name: "tap", Workload: "echo", Wiretap: true},
		{SessionId: alice, Name: "tap", Workload: "echo", Wiretap: true, HttpFilter: pathPrefix("/api")},
	} {
		_, err := fc.create(req, 5*time.Second)
		want := "the traffic-agent of deployment/echo predates HTTP filters (pod echo-abc-1, version v0.9.0)" + fix
		if status.Code(err) != codes.FailedPrecondition || !errContains(err, want) {
			t.Errorf("%s with an old agent: %v, want FailedPrecondition with %q", req.GetName(), err, want)
		}
	}
	if list, err := fc.client.ListIntercepts(ctx, &managerv1.ListInterceptsRequest{}); err != nil || len(list.GetIntercepts()) != 0 {
		t.Fatalf("refused intercepts left %v (%v)", list.GetIntercepts(), err)
	}
	if fc.rolledOutNow("echo") {
		t.Error("a refused intercept rolled the workload out")
	}

	// An intercept of whole connections is what the old agent understands.
	whole, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: alice, Name: "echo"}, 5*time.Second)
	if err != nil {
		t.Fatalf("whole intercept with an old agent: %v", err)
	}
	interceptsOf(t, old, whole.GetId())

	// A current agent in a second pod is not enough while the old one runs too.
	cur := fc.arriveAgent(fc.startPod("echo-abc-2", "echo", false, running))
	interceptsOf(t, cur, whole.GetId())
	_, err = fc.create(&managerv1.CreateInterceptRequest{SessionId: bob, Name: "tap", Workload: "echo", Wiretap: true}, 5*time.Second)
	if want := "predates HTTP filters (pod echo-abc-1, version v0.9.0)" + fix; status.Code(err) != codes.FailedPrecondition || !errContains(err, want) {
		t.Errorf("wiretap with an old and a current agent: %v, want %q", err, want)
	}

	// Once it is gone, wiretaps are allowed.
	if _, err := fc.agents.Depart(ctx, &managerv1.SessionRequest{SessionId: old.session}); err != nil {
		t.Fatal(err)
	}
	tap, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: bob, Name: "tap", Workload: "echo", Wiretap: true}, 5*time.Second)
	if err != nil {
		t.Fatalf("wiretap with current agents only: %v", err)
	}
	interceptsOf(t, cur, whole.GetId(), tap.GetId())

	// An old agent that arrives now (its container restarted, say) gets the whole intercept only,
	// and the app's port when only the wiretap is left.
	again := fc.arriveAgentWith(pod, "")
	interceptsOf(t, again, whole.GetId())
	if _, err := fc.client.RemoveIntercept(ctx, &managerv1.RemoveInterceptRequest{SessionId: alice, Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	interceptsOf(t, again, "")
	interceptsOf(t, cur, tap.GetId())

	// The same for a filtered intercept that exists when the old agent arrives.
	if _, err := fc.agents.Depart(ctx, &managerv1.SessionRequest{SessionId: again.session}); err != nil {
		t.Fatal(err)
	}
	filtered, err := fc.create(&managerv1.CreateInterceptRequest{SessionId: alice, Name: "echo", HttpFilter: header("x-dev", "alice")}, 5*time.Second)
	if err != nil {
		t.Fatalf("filtered intercept with current agents only: %v", err)
	}
	interceptsOf(t, cur, filtered.GetId(), tap.GetId())
	late := fc.arriveAgentWith(pod, "v0.9.0")
	interceptsOf(t, late, "")
	_, err = fc.create(&managerv1.CreateInterceptRequest{SessionId: bob, Name: "echo", HttpFilter: header("x-dev", "bob")}, 5*time.Second)
	if want := "(pod echo-abc-1, version v0.9.0)"; status.Code(err) != codes.FailedPrecondition || !errContains(err, want) {
		t.Errorf("filtered intercept after an old agent arrived: %v, want %q", err, want)
	}
}

func TestRestartCommand(t *testing.T) {
	tests := []struct {
		wl   workload.Workload
		want string
	}{
		{workload.Workload{Kind: workload.KindDeployment, Namespace: "shop", Name: "cart"}, "kubectl rollout restart deployment/cart -n shop"},
		{workload.Workload{Kind: workload.KindStatefulSet, Namespace: "shop", Name: "db"}, "kubectl rollout restart statefulset/db -n shop"},
		{workload.Workload{Kind: workload.KindReplicaSet, Namespace: "shop", Name: "rs"}, "kubectl delete pod -n shop rs-1 rs-2"},
	}
	for _, tt := range tests {
		if got := restartCommand(tt.wl, []string{"rs-1", "rs-2"}); got != tt.want {
			t.Errorf("restartCommand(%s) = %q, want %q", tt.wl, got, tt.want)
		}
	}
}

func TestOneTargetPerPort(t *testing.T) {
	whole := &managerv1.AgentTarget{AgentPort: 9900, InterceptId: "whole"}
	plaintext := &managerv1.AgentTarget{AgentPort: 9900, InterceptId: "plain", HttpFilter: &managerv1.HttpFilter{Plaintext: true}}
	filtered := &managerv1.AgentTarget{AgentPort: 9900, InterceptId: "alice", HttpFilter: header("x-dev", "alice")}
	tap := &managerv1.AgentTarget{AgentPort: 9900, InterceptId: "tap", Wiretap: true}
	tests := []struct {
		in, want []*managerv1.AgentTarget
	}{
		{[]*managerv1.AgentTarget{tap, whole}, []*managerv1.AgentTarget{whole}},
		{[]*managerv1.AgentTarget{filtered, tap}, nil},
		{[]*managerv1.AgentTarget{plaintext}, []*managerv1.AgentTarget{plaintext}},
	}
	for _, tt := range tests {
		if got := oneTargetPerPort(slices.Clone(tt.in)); !equalTargets(got, tt.want) {
			t.Errorf("oneTargetPerPort(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
