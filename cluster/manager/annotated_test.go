package manager

import (
	"context"
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

// TestAnnotatedWorkloadGetsAgentAtDeploy checks that the first pod of a workload carrying the
// inject-container-ports annotation gets the agent from the webhook, without an intercept or a
// rollout, and that the webhook leaves other workloads' pods alone.
func TestAnnotatedWorkloadGetsAgentAtDeploy(t *testing.T) {
	annotate := func(value string) func(*appsv1.Deployment) {
		return func(d *appsv1.Deployment) {
			d.Spec.Template.Labels["app"] = "nobody" // no service selects it: the annotation alone counts
			d.Spec.Template.Annotations = map[string]string{inject.LegacyAnnotationInjectPorts: value}
		}
	}
	objs := echoDeployment("annotated", annotate("http"))
	objs = append(objs, echoDeployment("bad", annotate("grpc"))...)
	objs = append(objs, echoDeployment("plain")...)
	fc := newFakeCluster(t, Config{}, objs...)

	for _, tc := range []struct {
		name       string
		wantAgent  bool
		wantConfig bool
	}{
		{name: "annotated", wantAgent: true, wantConfig: true},
		{name: "bad"}, // names a port the container does not have: planning fails
		{name: "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := fc.startPod(tc.name+"-abc-1", tc.name, false, running)
			if got := inject.HasAgent(pod); got != tc.wantAgent {
				t.Errorf("pod has agent = %v, want %v", got, tc.wantAgent)
			}
			cfg, err := fc.m.store.AgentConfig(context.Background(), "default", tc.name)
			switch {
			case tc.wantConfig && err != nil:
				t.Errorf("no config stored: %v", err)
			case tc.wantConfig && (cfg.WorkloadKind != "Deployment" || len(cfg.Targets) != 1 || cfg.Targets[0].ContainerPortName != "http"):
				t.Errorf("stored config %+v", cfg)
			case !tc.wantConfig && !errors.Is(err, inject.ErrNoConfig):
				t.Errorf("config lookup = %+v, %v; want none", cfg, err)
			}
			if fc.rolledOutNow(tc.name) {
				t.Error("workload rolled out")
			}
		})
	}
}

// rolledOutNow reports whether the Deployment carries a rollout annotation.
func (fc *fakeCluster) rolledOutNow(workloadName string) bool {
	fc.tb.Helper()
	d, err := fc.k8s.AppsV1().Deployments("default").Get(context.Background(), workloadName, metav1.GetOptions{})
	if err != nil {
		fc.tb.Fatal(err)
	}
	return d.Spec.Template.Annotations[workload.AnnotationRollout] != ""
}
