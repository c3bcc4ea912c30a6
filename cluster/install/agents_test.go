package install

import (
	"context"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

var isController = true

func podTemplate(app string, annotations map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

func selector(app string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func agentDeployment(ns, name string, annotations map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + name)},
		Spec:       appsv1.DeploymentSpec{Selector: selector(name), Template: podTemplate(name, annotations)},
	}
}

func agentPod(ns, name, app, ownerKind, owner string, withAgent bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + name), Labels: map[string]string{"app": app},
			OwnerReferences: []metav1.OwnerReference{{Kind: ownerKind, Name: owner, UID: types.UID(ns + owner), Controller: &isController}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
	}
	if withAgent {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: inject.AgentContainerName})
	}
	return p
}

func agentConfigMap(t *testing.T, ns string, cfgs ...agentconfig.Config) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: inject.ConfigMapName}, Data: map[string]string{}}
	for _, c := range cfgs {
		c.Version, c.Namespace, c.AgentImage = agentconfig.SchemaVersion, ns, "agent"
		if c.ManagerAddress == "" {
			c.ManagerAddress = "traffic-manager.teledock:8081" // the install in namespace teledock
		}
		c.Targets = []agentconfig.Target{{Protocol: agentconfig.TCP, ContainerName: "app", ContainerPort: 80, AgentPort: 9900, Mode: agentconfig.ModeRedirect}}
		y, err := c.YAML()
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[c.WorkloadName] = string(y)
	}
	return cm
}

// TestRemoveAgents checks that every agent goes and every workload gets its pod template back
// exactly, whether a ConfigMap or only the annotation names it.
func TestRemoveAgents(t *testing.T) {
	rollout := workload.AnnotationRollout
	objs := []runtime.Object{
		agentDeployment("a", "web", map[string]string{"team": "blue", rollout: "x"}),
		agentDeployment("a", "api", map[string]string{rollout: "y"}),
		agentDeployment("a", "other", map[string]string{"team": "red"}),
		&appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "db", UID: "adb"},
			Spec: appsv1.StatefulSetSpec{Selector: selector("db"), Template: podTemplate("db", nil),
				UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}},
		},
		agentPod("a", "db-0", "db", "StatefulSet", "db", true),
		agentConfigMap(t, "a",
			agentconfig.Config{WorkloadKind: "Deployment", WorkloadName: "web"},
			agentconfig.Config{WorkloadKind: "Deployment", WorkloadName: "api"},
			agentconfig.Config{WorkloadKind: "StatefulSet", WorkloadName: "db"}),
		// Namespace b lost its ConfigMap; the annotation still tells.
		&appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "legacy", UID: "blegacy"},
			Spec:       appsv1.ReplicaSetSpec{Selector: selector("legacy"), Template: podTemplate("legacy", map[string]string{rollout: "z"})},
		},
		agentPod("b", "legacy-1", "legacy", "ReplicaSet", "legacy", true),
		agentPod("b", "legacy-2", "legacy", "ReplicaSet", "legacy", false),
	}
	k8s := fake.NewClientset(objs...)
	ctx := context.Background()
	var removed []string
	if err := removeAgents(ctx, k8s, []string{metav1.NamespaceAll}, "teledock", func(e Event) { removed = append(removed, e.Namespace+"/"+e.Workload) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a/Deployment/api", "a/StatefulSet/db", "a/Deployment/web", "b/ReplicaSet/legacy"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}

	for _, ns := range []string{"a", "b"} {
		if _, err := k8s.CoreV1().ConfigMaps(ns).Get(ctx, inject.ConfigMapName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("agent configs of %s: %v, want deleted", ns, err)
		}
	}
	templates := map[string]map[string]string{
		"web": {"team": "blue"}, "api": nil, "other": {"team": "red"},
	}
	for name, want := range templates {
		d, err := k8s.AppsV1().Deployments("a").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := d.Spec.Template.Annotations
		if (want == nil) != (got == nil) || !maps.Equal(got, want) {
			t.Errorf("%s annotations %#v, want %#v", name, got, want)
		}
	}
	rs, _ := k8s.AppsV1().ReplicaSets("b").Get(ctx, "legacy", metav1.GetOptions{})
	if rs.Spec.Template.Annotations != nil {
		t.Errorf("legacy annotations %v", rs.Spec.Template.Annotations)
	}
	for _, p := range []struct {
		ns, name string
		gone     bool
	}{{"a", "db-0", true}, {"b", "legacy-1", true}, {"b", "legacy-2", false}} {
		_, err := k8s.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if gone := apierrors.IsNotFound(err); gone != p.gone {
			t.Errorf("pod %s/%s deleted: %v, want %v", p.ns, p.name, gone, p.gone)
		}
	}

	// Idempotent: nothing left to do.
	removed = nil
	if err := removeAgents(ctx, k8s, []string{metav1.NamespaceAll}, "teledock", func(e Event) { removed = append(removed, e.Workload) }); err != nil || len(removed) != 0 {
		t.Errorf("second run: %v, removed %v", err, removed)
	}
}

// TestRemoveAgentsKeepsOtherInstalls: with two traffic-managers in one cluster, removing one's
// agents leaves the other's configs, annotations and pods alone.
func TestRemoveAgentsKeepsOtherInstalls(t *testing.T) {
	rollout := workload.AnnotationRollout
	objs := []runtime.Object{
		agentDeployment("a", "mine", map[string]string{rollout: "x"}),
		agentDeployment("a", "theirs", map[string]string{rollout: "y"}),
		agentConfigMap(t, "a",
			agentconfig.Config{WorkloadKind: "Deployment", WorkloadName: "mine"},
			agentconfig.Config{WorkloadKind: "Deployment", WorkloadName: "theirs", ManagerAddress: "traffic-manager.team-b.svc.cluster.local:8081"}),
	}
	k8s := fake.NewClientset(objs...)
	ctx := context.Background()
	var removed []string
	if err := removeAgents(ctx, k8s, []string{metav1.NamespaceAll}, "teledock", func(e Event) { removed = append(removed, e.Workload) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{"Deployment/mine"}) {
		t.Errorf("removed %v, want only Deployment/mine", removed)
	}
	cm, err := k8s.CoreV1().ConfigMaps("a").Get(ctx, inject.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the other install's agent configs went: %v", err)
	}
	if _, ok := cm.Data["theirs"]; !ok || len(cm.Data) != 1 {
		t.Errorf("agent configs left: %v, want only theirs", slices.Collect(maps.Keys(cm.Data)))
	}
	d, _ := k8s.AppsV1().Deployments("a").Get(ctx, "theirs", metav1.GetOptions{})
	if d.Spec.Template.Annotations[rollout] != "y" {
		t.Errorf("the other install's workload was restored: %v", d.Spec.Template.Annotations)
	}
	// And the other install's removal takes the rest.
	if err := removeAgents(ctx, k8s, []string{metav1.NamespaceAll}, "team-b", func(Event) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := k8s.CoreV1().ConfigMaps("a").Get(ctx, inject.ConfigMapName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("agent configs after both removals: %v, want deleted", err)
	}
}

// TestRemoveAgentsOnCluster runs RemoveAgents on a real cluster, in the namespaces of
// TELEDOCK_TEST_REMOVE_AGENTS (comma-separated) only, so that it leaves other installs on a shared
// cluster alone. TELEDOCK_TEST_KUBECONFIG names the kubeconfig.
func TestRemoveAgentsOnCluster(t *testing.T) {
	kubeconfig, nss := os.Getenv("TELEDOCK_TEST_KUBECONFIG"), os.Getenv("TELEDOCK_TEST_REMOVE_AGENTS")
	if kubeconfig == "" || nss == "" {
		t.Skip("set TELEDOCK_TEST_KUBECONFIG and TELEDOCK_TEST_REMOVE_AGENTS=NAMESPACE,...")
	}
	k8s, err := kubeClient(configFlags(Config{Kubeconfig: kubeconfig}))
	if err != nil {
		t.Fatal(err)
	}
	err = removeAgents(context.Background(), k8s, strings.Split(nss, ","), os.Getenv("TELEDOCK_TEST_MANAGER_NAMESPACE"), func(e Event) { t.Logf("%+v", e) })
	if err != nil {
		t.Fatal(err)
	}
}
