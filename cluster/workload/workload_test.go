package workload

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

var podLabels = map[string]string{"app": "echo"}

func template(annotations map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "echo"}}},
	}
}

func deployment(name string, annotations map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("dep-" + name)},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: template(annotations),
		},
	}
}

func replicaSet(name string, owner *appsv1.Deployment) *appsv1.ReplicaSet {
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("rs-" + name), Labels: podLabels},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: template(nil),
		},
	}
	if owner != nil {
		rs.OwnerReferences = []metav1.OwnerReference{controller(KindDeployment, owner.Name, owner.UID)}
	}
	return rs
}

func statefulSet(name string, strategy appsv1.StatefulSetUpdateStrategyType) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("sts-" + name)},
		Spec: appsv1.StatefulSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: podLabels},
			Template:       template(nil),
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: strategy},
		},
	}
}

func controller(kind, name string, uid types.UID) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: kind, Name: name, UID: uid, Controller: &yes}
}

func pod(name string, age time.Duration, owner metav1.OwnerReference, deleting bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Namespace: "ns", Name: name, UID: types.UID("pod-" + name), Labels: podLabels,
		CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(-age)),
		OwnerReferences:   []metav1.OwnerReference{owner},
	}}
	if deleting {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	return p
}

func TestGet(t *testing.T) {
	dep := deployment("web", nil)
	objs := []runtime.Object{
		dep, replicaSet("web-abc", dep), // a Deployment's ReplicaSet
		replicaSet("rollout-xyz", nil), // a ReplicaSet on its own
		statefulSet("db", appsv1.RollingUpdateStatefulSetStrategyType),
		statefulSet("web", appsv1.OnDeleteStatefulSetStrategyType), // shadowed by the Deployment
		statefulSet("cache", appsv1.OnDeleteStatefulSetStrategyType),
	}
	tests := []struct {
		name         string
		kind         string
		wantRollsOut bool
		wantErr      error
	}{
		{"web", KindDeployment, true, nil},
		{"rollout-xyz", KindReplicaSet, false, nil},
		{"db", KindStatefulSet, true, nil},
		{"cache", KindStatefulSet, false, nil},
		{"web-abc", "", false, ErrNotFound},
		{"nope", "", false, ErrNotFound},
	}
	c := fake.NewClientset(objs...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Get(context.Background(), c, "ns", tt.name)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if w.Kind != tt.kind || w.Name != tt.name || w.RollsOut != tt.wantRollsOut || w.Replicas != 1 {
				t.Errorf("got %+v", w)
			}
		})
	}

	all, err := List(context.Background(), c, "ns")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range all {
		got = append(got, w.Kind+"/"+w.Name)
	}
	want := []string{"StatefulSet/cache", "StatefulSet/db", "ReplicaSet/rollout-xyz", "Deployment/web", "StatefulSet/web"}
	if !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

func TestPods(t *testing.T) {
	dep := deployment("web", nil)
	old, cur := replicaSet("web-old", dep), replicaSet("web-cur", dep)
	other := replicaSet("stray", nil)
	c := fake.NewClientset(dep, old, cur, other,
		pod("web-old-1", 2*time.Hour, controller(KindReplicaSet, old.Name, old.UID), false),
		pod("web-cur-1", time.Minute, controller(KindReplicaSet, cur.Name, cur.UID), false),
		pod("web-cur-2", time.Hour, controller(KindReplicaSet, cur.Name, cur.UID), true),
		pod("stray-1", time.Hour, controller(KindReplicaSet, other.Name, other.UID), false),
	)
	tests := []struct {
		workload string
		want     []string
	}{
		{"web", []string{"web-old-1", "web-cur-1"}},
		{"stray", []string{"stray-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.workload, func(t *testing.T) {
			w, err := Get(context.Background(), c, "ns", tt.workload)
			if err != nil {
				t.Fatal(err)
			}
			pods, err := Pods(context.Background(), c, w)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pods {
				got = append(got, p.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("pods %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRolloutRestore checks that restoring after a rollout gives back the template exactly,
// whether it had annotations before or not.
func TestRolloutRestore(t *testing.T) {
	tests := []struct {
		name   string
		before map[string]string
	}{
		{"no annotations", nil},
		{"other annotations", map[string]string{"team": "blue"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := fake.NewClientset(deployment("web", tt.before))
			w, err := Get(ctx, c, "ns", "web")
			if err != nil {
				t.Fatal(err)
			}
			if err := Rollout(ctx, c, w, "abc"); err != nil {
				t.Fatal(err)
			}
			w, _ = Get(ctx, c, "ns", "web")
			want := maps.Clone(tt.before)
			if want == nil {
				want = map[string]string{}
			}
			want[AnnotationRollout] = "abc"
			if !maps.Equal(w.Template.Annotations, want) {
				t.Fatalf("after rollout %v, want %v", w.Template.Annotations, want)
			}
			// The same value again is no change.
			if err := Rollout(ctx, c, w, "abc"); err != nil {
				t.Fatal(err)
			}

			changed, err := Restore(ctx, c, w)
			if err != nil || !changed {
				t.Fatalf("Restore = %v, %v", changed, err)
			}
			d, err := c.AppsV1().Deployments("ns").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := d.Spec.Template.Annotations
			if tt.before == nil && got != nil {
				t.Errorf("annotations map %v left behind", got)
			}
			if tt.before != nil && !maps.Equal(got, tt.before) {
				t.Errorf("annotations %v, want %v", got, tt.before)
			}
			if changed, err := Restore(ctx, c, w); err != nil || changed {
				t.Errorf("second Restore = %v, %v; want no change", changed, err)
			}
		})
	}
	if changed, err := Restore(context.Background(), fake.NewClientset(), Workload{Kind: KindDeployment, Namespace: "ns", Name: "gone"}); err != nil || changed {
		t.Errorf("Restore of a missing workload = %v, %v", changed, err)
	}
}

func TestRestorePatch(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"none", nil, ""},
		{"not ours", map[string]string{"a": "b"}, ""},
		{
			"only ours", map[string]string{AnnotationRollout: "v1"},
			`[{"op":"test","path":"/spec/template/metadata/annotations/teledock.dev~1agent-rollout","value":"v1"},` +
				`{"op":"remove","path":"/spec/template/metadata/annotations"}]`,
		},
		{
			"with others", map[string]string{AnnotationRollout: "v1", "a": "b"},
			`[{"op":"test","path":"/spec/template/metadata/annotations/teledock.dev~1agent-rollout","value":"v1"},` +
				`{"op":"remove","path":"/spec/template/metadata/annotations/teledock.dev~1agent-rollout"}]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := restorePatch(tt.annotations)
			if err != nil {
				t.Fatal(err)
			}
			if ok != (tt.want != "") || string(got) != tt.want {
				t.Errorf("got %s (%v), want %s", got, ok, tt.want)
			}
		})
	}
}
