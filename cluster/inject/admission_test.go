package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fakeConfigs is a ConfigSource over a map keyed by "namespace/workload".
type fakeConfigs struct {
	configs map[string]AgentConfig
	err     error
	asked   []string
}

func (f *fakeConfigs) AgentConfig(_ context.Context, namespace, workload string) (AgentConfig, error) {
	f.asked = append(f.asked, namespace+"/"+workload)
	if f.err != nil {
		return AgentConfig{}, f.err
	}
	cfg, ok := f.configs[namespace+"/"+workload]
	if !ok {
		return AgentConfig{}, fmt.Errorf("%w for %s/%s", ErrNoConfig, namespace, workload)
	}
	return cfg, nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func ownedPod(kind, name string, hash string) *corev1.Pod {
	pod := cartPod()
	pod.Namespace = "" // as in a CREATE request: the namespace is in the request
	pod.Name = ""
	pod.GenerateName = name + "-"
	if hash != "" {
		pod.Labels = map[string]string{"app": "cart", "pod-template-hash": hash}
	}
	if kind != "" {
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, Controller: ptr(true)}}
	}
	return pod
}

func podRequest(tb testing.TB, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	tb.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		tb.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       "req-1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "shop",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}
}

func TestAdmissionReview(t *testing.T) {
	deployCfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	stsCfg := deployCfg
	stsCfg.WorkloadKind, stsCfg.WorkloadName = "StatefulSet", "db"
	rsCfg := deployCfg
	rsCfg.WorkloadKind, rsCfg.WorkloadName = "ReplicaSet", "canary-x1"
	configs := map[string]AgentConfig{"shop/cart": deployCfg, "shop/db": stsCfg, "shop/canary-x1": rsCfg}

	withAgent := ownedPod("ReplicaSet", "cart-5d4b8", "5d4b8")
	withAgent.Spec.Containers = append(withAgent.Spec.Containers, corev1.Container{Name: AgentContainerName})
	stale := ownedPod("ReplicaSet", "cart-5d4b8", "5d4b8")
	stale.Spec.Containers[0].Ports[0].Name = "web"

	for _, tc := range []struct {
		name        string
		req         func(*admissionv1.AdmissionRequest)
		pod         *corev1.Pod
		lookupErr   error
		wantPatch   bool
		wantAsked   []string
		wantWarning string
	}{
		{name: "deployment pod", pod: ownedPod("ReplicaSet", "cart-5d4b8", "5d4b8"), wantPatch: true, wantAsked: []string{"shop/cart"}},
		{name: "statefulset pod", pod: ownedPod("StatefulSet", "db", ""), wantPatch: true, wantAsked: []string{"shop/db"}},
		{name: "bare replicaset pod", pod: ownedPod("ReplicaSet", "canary-x1", ""), wantPatch: true, wantAsked: []string{"shop/canary-x1"}},
		{name: "replicaset named like a deployment but without the hash suffix",
			pod: ownedPod("ReplicaSet", "canary-x1", "zzz"), wantPatch: true, wantAsked: []string{"shop/canary-x1"}},
		{name: "workload without config", pod: ownedPod("DaemonSet", "logs", ""), wantAsked: []string{"shop/logs"}},
		{name: "config of another kind", pod: ownedPod("DaemonSet", "cart", ""), wantAsked: []string{"shop/cart"}},
		{name: "bare pod", pod: ownedPod("", "cart", "")},
		{name: "job pod", pod: ownedPod("Job", "cart", "")},
		{name: "already injected", pod: withAgent, wantAsked: []string{"shop/cart"}},
		{name: "update is ignored", pod: ownedPod("StatefulSet", "db", ""),
			req: func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }},
		{name: "subresource is ignored", pod: ownedPod("StatefulSet", "db", ""),
			req: func(r *admissionv1.AdmissionRequest) { r.SubResource = "ephemeralcontainers" }},
		{name: "other kind is ignored", pod: ownedPod("StatefulSet", "db", ""),
			req: func(r *admissionv1.AdmissionRequest) { r.Kind.Kind = "Service" }},
		{name: "undecodable object", pod: ownedPod("StatefulSet", "db", ""),
			req: func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(`{"spec":7}`) }},
		{name: "lookup fails", pod: ownedPod("StatefulSet", "db", ""), lookupErr: errors.New("apiserver on fire"),
			wantAsked: []string{"shop/db"}, wantWarning: "teledock (manager teledock): traffic-agent not injected: apiserver on fire"},
		{name: "stale config", pod: stale, wantAsked: []string{"shop/cart"},
			wantWarning: `teledock (manager teledock): traffic-agent not injected: pod does not match the agent config: container "app" has no port named "http"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeConfigs{configs: configs, err: tc.lookupErr}
			h, err := NewAdmissionHandler(testLogger(t), src, "teledock")
			if err != nil {
				t.Fatal(err)
			}
			req := podRequest(t, tc.pod)
			if tc.req != nil {
				tc.req(req)
			}
			resp := h.Review(context.Background(), req)
			if !resp.Allowed || resp.UID != "req-1" {
				t.Fatalf("response %+v: not allowed or wrong UID", resp)
			}
			if got := resp.Patch != nil; got != tc.wantPatch {
				t.Errorf("patched = %v, want %v", got, tc.wantPatch)
			}
			if tc.wantPatch {
				if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
					t.Errorf("patch type %v", resp.PatchType)
				}
				var ops []JSONPatchOp
				if err := json.Unmarshal(resp.Patch, &ops); err != nil {
					t.Fatal(err)
				}
				if !HasAgent(applyPatch(t, tc.pod, ops)) {
					t.Error("patched pod has no agent")
				}
			}
			if strings.Join(src.asked, ",") != strings.Join(tc.wantAsked, ",") {
				t.Errorf("asked for %v, want %v", src.asked, tc.wantAsked)
			}
			switch {
			case tc.wantWarning == "" && len(resp.Warnings) > 0:
				t.Errorf("warnings %q", resp.Warnings)
			case tc.wantWarning != "" && (len(resp.Warnings) != 1 || !strings.HasPrefix(tc.wantWarning, strings.TrimSuffix(resp.Warnings[0], "..."))):
				t.Errorf("warnings %q, want %q", resp.Warnings, tc.wantWarning)
			}
			for _, w := range resp.Warnings {
				if len(w) > maxWarningLen {
					t.Errorf("warning longer than %d: %q", maxWarningLen, w)
				}
			}
		})
	}
}

func TestAdmissionHandlerHTTP(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	h, err := NewAdmissionHandler(testLogger(t), &fakeConfigs{configs: map[string]AgentConfig{"shop/cart": cfg}}, "teledock")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  podRequest(t, ownedPod("ReplicaSet", "cart-5d4b8", "5d4b8")),
	}
	good, _ := json.Marshal(review)
	for _, tc := range []struct {
		name       string
		method     string
		body       string
		wantStatus int
	}{
		{"review", http.MethodPost, string(good), http.StatusOK},
		{"GET", http.MethodGet, "", http.StatusMethodNotAllowed},
		{"garbage", http.MethodPost, "{", http.StatusBadRequest},
		{"no request", http.MethodPost, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+"/inject", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantStatus != http.StatusOK {
				return
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil ||
				out.Response.UID != "req-1" || !out.Response.Allowed || out.Response.Patch == nil {
				t.Errorf("response %s", body)
			}
		})
	}
}

func TestNewAdmissionHandlerNils(t *testing.T) {
	if _, err := NewAdmissionHandler(nil, &fakeConfigs{}, "teledock"); err == nil {
		t.Error("nil logger accepted")
	}
	if _, err := NewAdmissionHandler(testLogger(t), nil, "teledock"); err == nil {
		t.Error("nil config source accepted")
	}
}

// fakePlanner is a fakeConfigs that plans cartWorkload's config on demand, as the manager does
// for annotated workloads, and stores it.
type fakePlanner struct {
	fakeConfigs
	planErr error
	planned []string
}

func (f *fakePlanner) PlanAnnotated(_ context.Context, namespace, kind, name string) (AgentConfig, error) {
	f.planned = append(f.planned, kind+" "+namespace+"/"+name)
	if f.planErr != nil {
		return AgentConfig{}, f.planErr
	}
	if kind != "Deployment" || name != "cart" {
		return AgentConfig{}, fmt.Errorf("%w: no %s %s", ErrNoConfig, kind, name)
	}
	w := cartWorkload()
	w.Template.Annotations = map[string]string{AnnotationInjectPorts: "http"}
	cfg, err := Plan(w, nil, testSettings)
	if err != nil {
		return AgentConfig{}, err
	}
	f.configs[namespace+"/"+name] = cfg
	return cfg, nil
}

func TestAdmissionReviewAnnotated(t *testing.T) {
	annotatedPod := func(key, value string) *corev1.Pod {
		pod := ownedPod("ReplicaSet", "cart-5d4b8", "5d4b8")
		if key != "" {
			pod.Annotations = map[string]string{key: value}
		}
		return pod
	}
	for _, tc := range []struct {
		name        string
		pod         *corev1.Pod
		planErr     error
		wantPatch   bool
		wantPlanned []string
		wantWarning string
	}{
		{name: "annotated", pod: annotatedPod(AnnotationInjectPorts, "http"),
			wantPatch: true, wantPlanned: []string{"Deployment shop/cart"}},
		{name: "legacy annotation", pod: annotatedPod(LegacyAnnotationInjectPorts, "8080"),
			wantPatch: true, wantPlanned: []string{"Deployment shop/cart"}},
		{name: "not annotated", pod: annotatedPod("", "")},
		{name: "bad annotation", pod: annotatedPod(AnnotationInjectPorts, "http/SCTP"),
			wantWarning: "teledock (manager teledock): traffic-agent not injected: bad annotation teledock.dev/inject-container-ports"},
		{name: "annotated bare replicaset", pod: func() *corev1.Pod {
			pod := ownedPod("ReplicaSet", "canary-x1", "")
			pod.Annotations = map[string]string{AnnotationInjectPorts: "http"}
			return pod
		}(), wantPlanned: []string{"ReplicaSet shop/canary-x1"}},
		{name: "planning fails", pod: annotatedPod(AnnotationInjectPorts, "http"), planErr: errors.New("apiserver on fire"),
			wantPlanned: []string{"Deployment shop/cart"}, wantWarning: "teledock (manager teledock): traffic-agent not injected: plan agent config of Deployment cart: apiserver on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakePlanner{fakeConfigs: fakeConfigs{configs: map[string]AgentConfig{}}, planErr: tc.planErr}
			h, err := NewAdmissionHandler(testLogger(t), src, "teledock")
			if err != nil {
				t.Fatal(err)
			}
			resp := h.Review(context.Background(), podRequest(t, tc.pod))
			if !resp.Allowed {
				t.Fatalf("response %+v: not allowed", resp)
			}
			if got := resp.Patch != nil; got != tc.wantPatch {
				t.Errorf("patched = %v, want %v", got, tc.wantPatch)
			}
			if tc.wantPatch {
				var ops []JSONPatchOp
				if err := json.Unmarshal(resp.Patch, &ops); err != nil {
					t.Fatal(err)
				}
				if !HasAgent(applyPatch(t, tc.pod, ops)) {
					t.Error("patched pod has no agent")
				}
				if _, ok := src.configs["shop/cart"]; !ok {
					t.Error("no config stored")
				}
			}
			if strings.Join(src.planned, ",") != strings.Join(tc.wantPlanned, ",") {
				t.Errorf("planned %v, want %v", src.planned, tc.wantPlanned)
			}
			switch {
			case tc.wantWarning == "" && len(resp.Warnings) > 0:
				t.Errorf("warnings %q", resp.Warnings)
			case tc.wantWarning != "" && (len(resp.Warnings) != 1 || !samePrefix(resp.Warnings[0], tc.wantWarning)):
				t.Errorf("warnings %q, want one that begins as %q", resp.Warnings, tc.wantWarning)
			}
		})
	}
}

// samePrefix: a warning cut at maxWarningLen ("...") and the expected text agree as far as both go.
func samePrefix(warning, want string) bool {
	w := strings.TrimSuffix(warning, "...")
	return strings.HasPrefix(w, want) || strings.HasPrefix(want, w)
}
