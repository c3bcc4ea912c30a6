package install

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

// objects renders cfg and decodes the manifests, keyed by "Kind/name".
func objects(t *testing.T, cfg Config) map[string]*unstructured.Unstructured {
	t.Helper()
	manifest, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("manifest: %v\n%s", err, doc)
		}
		if string(js) == "null" {
			continue
		}
		// Unstructured's decoder keeps integers as int64, as the API server does.
		var o unstructured.Unstructured
		if err := o.UnmarshalJSON(js); err != nil {
			t.Fatalf("manifest: %v\n%s", err, doc)
		}
		out[o.GetKind()+"/"+o.GetName()] = &o
	}
	return out
}

func str(t *testing.T, o *unstructured.Unstructured, path ...string) string {
	t.Helper()
	s, _, err := unstructured.NestedString(o.Object, path...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(path, "."), err)
	}
	return s
}

func TestRender(t *testing.T) {
	tests := []struct {
		name           string
		cfg            Config
		wantImage      string
		wantAgentImage string
		wantPolicy     string
	}{
		{
			name:           "version becomes the tag",
			cfg:            Config{Namespace: "teledock", Version: "v0.3.1"},
			wantImage:      "teledock/traffic-manager:v0.3.1",
			wantAgentImage: "teledock/traffic-agent:v0.3.1",
			wantPolicy:     "IfNotPresent",
		},
		{
			name: "values override",
			cfg: Config{Namespace: "dev-tools", Release: "tm", Version: "v0.3.1", Values: map[string]any{
				"image": map[string]any{"repository": "registry.local/tm", "tag": "abc", "pullPolicy": "Never"},
			}},
			wantImage:      "registry.local/tm:abc",
			wantAgentImage: "teledock/traffic-agent:v0.3.1",
			wantPolicy:     "Never",
		},
		{
			name:           "a non-SemVer version still tags the image",
			cfg:            Config{Namespace: "teledock", Version: "dev-1234"},
			wantImage:      "teledock/traffic-manager:dev-1234",
			wantAgentImage: "teledock/traffic-agent:dev-1234",
			wantPolicy:     "IfNotPresent",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := objects(t, tt.cfg)
			for _, key := range []string{"ServiceAccount/traffic-manager", "Deployment/traffic-manager", "Service/traffic-manager",
				"ClusterRole/teledock-traffic-manager-" + tt.cfg.Namespace, "ClusterRoleBinding/teledock-traffic-manager-" + tt.cfg.Namespace} {
				o, ok := objs[key]
				if !ok {
					t.Errorf("no %s in %v", key, keys(objs))
					continue
				}
				if l := o.GetLabels(); l["app.kubernetes.io/name"] != "traffic-manager" || l["app.kubernetes.io/managed-by"] != "Helm" {
					t.Errorf("%s labels %v", key, l)
				}
				namespaced := !strings.HasPrefix(key, "Cluster")
				if got := o.GetNamespace(); namespaced && got != tt.cfg.Namespace || !namespaced && got != "" {
					t.Errorf("%s namespace %q, want %q", key, got, tt.cfg.Namespace)
				}
			}

			d := objs["Deployment/traffic-manager"]
			if d == nil {
				t.Fatal("no deployment")
			}
			cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
			if len(cs) != 1 {
				t.Fatalf("%d containers", len(cs))
			}
			c := &unstructured.Unstructured{Object: cs[0].(map[string]any)}
			if got := str(t, c, "image"); got != tt.wantImage {
				t.Errorf("image %q, want %q", got, tt.wantImage)
			}
			if got := str(t, c, "imagePullPolicy"); got != tt.wantPolicy {
				t.Errorf("pull policy %q, want %q", got, tt.wantPolicy)
			}
			env := map[string]any{}
			list, _, _ := unstructured.NestedSlice(c.Object, "env")
			for _, e := range list {
				m := e.(map[string]any)
				env[m["name"].(string)] = m
			}
			if got, _, _ := unstructured.NestedString(env["AGENT_IMAGE"].(map[string]any), "value"); got != tt.wantAgentImage {
				t.Errorf("AGENT_IMAGE %q, want %q", got, tt.wantAgentImage)
			}
			if got, _, _ := unstructured.NestedString(env["POD_NAMESPACE"].(map[string]any), "valueFrom", "fieldRef", "fieldPath"); got != "metadata.namespace" {
				t.Errorf("POD_NAMESPACE from %q", got)
			}
			if got, _, _ := unstructured.NestedBool(c.Object, "securityContext", "readOnlyRootFilesystem"); !got {
				t.Error("root filesystem is writable")
			}
			if got, _, _ := unstructured.NestedInt64(d.Object, "spec", "template", "spec", "securityContext", "runAsUser"); got != 65532 {
				t.Errorf("runAsUser %d", got)
			}
			svc := objs["Service/traffic-manager"]
			ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
			if p := ports[0].(map[string]any); p["name"] != "grpc" || p["port"] != int64(8081) {
				t.Errorf("service port %v", p)
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func deployment(generation, observed int64, updated, available, total int32) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "teledock", Name: deploymentName, Generation: generation},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "traffic-manager"}},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: observed, UpdatedReplicas: updated,
			AvailableReplicas: available, Replicas: total},
	}
}

func waitingPod(reason, message string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "teledock", Name: "traffic-manager-abc",
			Labels: map[string]string{"app.kubernetes.io/name": "traffic-manager"}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name:  "traffic-manager",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
		}}},
	}
}

func TestWaitReady(t *testing.T) {
	tests := []struct {
		name       string
		deployment *appsv1.Deployment
		pod        *corev1.Pod
		wantErr    error
		wantReason string
	}{
		{name: "ready", deployment: deployment(2, 2, 1, 1, 1)},
		{name: "old generation not yet observed", deployment: deployment(3, 2, 1, 1, 1), wantErr: ErrNotReady},
		{name: "old pod still there", deployment: deployment(2, 2, 1, 1, 2), wantErr: ErrNotReady},
		{
			name:       "image missing",
			deployment: deployment(1, 1, 1, 0, 1),
			pod:        waitingPod("ErrImageNeverPull", `image "teledock/traffic-manager:v1" is not present`),
			wantErr:    ErrNotReady,
			wantReason: "ErrImageNeverPull",
		},
		{
			name:       "starting is not a problem",
			deployment: deployment(1, 1, 1, 0, 1),
			pod:        waitingPod("ContainerCreating", ""),
			wantErr:    ErrNotReady,
		},
		{name: "no deployment", wantErr: ErrNotReady, wantReason: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k8s := fake.NewClientset()
			if tt.deployment != nil {
				k8s.Tracker().Add(tt.deployment)
			}
			if tt.pod != nil {
				k8s.Tracker().Add(tt.pod)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			var events []Event
			err := waitReady(ctx, k8s, "teledock", deploymentName, 10*time.Millisecond, func(e Event) { events = append(events, e) })
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("waitReady: %v, want %v", err, tt.wantErr)
			}
			if len(events) == 0 {
				t.Fatal("no events")
			}
			last := events[len(events)-1]
			if tt.wantErr == nil && last.Kind != EventReady {
				t.Errorf("last event %+v, want ready", last)
			}
			if !strings.Contains(last.Reason, tt.wantReason) || tt.wantReason == "" && last.Reason != "" {
				t.Errorf("reason %q, want it to mention %q", last.Reason, tt.wantReason)
			}
			if tt.wantReason != "" && !strings.Contains(err.Error(), tt.wantReason) {
				t.Errorf("error %q does not say %q", err, tt.wantReason)
			}
			// Unchanged polls are not repeated as events.
			if tt.wantErr != nil && len(events) != 1 {
				t.Errorf("%d events for an unchanging state: %+v", len(events), events)
			}
		})
	}
}

func TestNamespaceOwnership(t *testing.T) {
	tests := []struct {
		name        string
		existing    *corev1.Namespace
		wantCreated bool
		wantDeleted bool
	}{
		{name: "created by install, deleted by uninstall", wantCreated: true, wantDeleted: true},
		{name: "pre-existing namespace is kept", existing: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "teledock"}}},
		{
			name: "created for another release is kept",
			existing: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "teledock",
				Annotations: map[string]string{AnnotationCreatedFor: "other"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k8s := fake.NewClientset()
			if tt.existing != nil {
				k8s.Tracker().Add(tt.existing)
			}
			var kinds []EventKind
			cfg := Config{Namespace: "teledock", Release: DefaultRelease, Events: func(e Event) { kinds = append(kinds, e.Kind) }}
			ctx := context.Background()
			if err := ensureNamespace(ctx, k8s, cfg); err != nil {
				t.Fatal(err)
			}
			if err := ensureNamespace(ctx, k8s, cfg); err != nil {
				t.Fatalf("second ensureNamespace: %v", err)
			}
			ns, err := k8s.CoreV1().Namespaces().Get(ctx, "teledock", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := ns.Annotations[AnnotationCreatedFor] == DefaultRelease; got != tt.wantCreated {
				t.Errorf("marked as created by install: %v, want %v", got, tt.wantCreated)
			}
			if err := deleteOwnNamespace(ctx, k8s, cfg, time.Millisecond); err != nil {
				t.Fatal(err)
			}
			_, err = k8s.CoreV1().Namespaces().Get(ctx, "teledock", metav1.GetOptions{})
			if deleted := apierrors.IsNotFound(err); deleted != tt.wantDeleted {
				t.Errorf("deleted: %v, want %v", deleted, tt.wantDeleted)
			}
			want := []EventKind(nil)
			if tt.wantCreated {
				want = append(want, EventNamespaceCreated)
			}
			if tt.wantDeleted {
				want = append(want, EventNamespaceDeleted)
			}
			if strings.Join(toStrings(kinds), ",") != strings.Join(toStrings(want), ",") {
				t.Errorf("events %v, want %v", kinds, want)
			}
		})
	}
}

func toStrings(ks []EventKind) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = string(k)
	}
	return out
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestRenderDirect: the direct port's NodePort Service and the manager's listener exist only when
// the direct transport is enabled.
func TestRenderDirect(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		cfg := Config{Namespace: "teledock", Version: "v0.3.1"}
		if enabled {
			cfg.Values = map[string]any{"direct": map[string]any{"enabled": true, "nodePort": 30082}}
		}
		objs := objects(t, cfg)
		svc, ok := objs["Service/traffic-manager-direct"]
		if ok != enabled {
			t.Fatalf("enabled=%v: direct service present=%v", enabled, ok)
		}
		d := objs["Deployment/traffic-manager"]
		cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		env, _, _ := unstructured.NestedSlice(cs[0].(map[string]any), "env")
		listen := ""
		for _, e := range env {
			if m := e.(map[string]any); m["name"] == "DIRECT_LISTEN" {
				listen, _ = m["value"].(string)
			}
		}
		if enabled != (listen == ":8083") {
			t.Errorf("enabled=%v: DIRECT_LISTEN %q", enabled, listen)
		}
		if !enabled {
			continue
		}
		if got := str(t, svc, "spec", "type"); got != "NodePort" {
			t.Errorf("direct service type %q", got)
		}
		ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		if p := ports[0].(map[string]any); p["targetPort"] != "direct" || p["nodePort"] != int64(30082) {
			t.Errorf("direct service port %v", p)
		}
	}
}
