package session

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

func pod(name string, created time.Time, ready bool, mods ...func(*corev1.Pod)) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			Namespace:         "teledock",
			Labels:            map[string]string{"app.kubernetes.io/name": "traffic-manager"},
			CreationTimestamp: metav1.NewTime(created),
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "manager",
			Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 9090}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}
	for _, m := range mods {
		m(&p)
	}
	return p
}

func terminating(p *corev1.Pod) {
	now := metav1.Now()
	p.DeletionTimestamp = &now
}

func waiting(reason string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: reason},
		}}}
	}
}

func TestPickPod(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		pods    []corev1.Pod
		want    string
		wantWhy string
	}{
		{name: "none"},
		{name: "one ready", pods: []corev1.Pod{pod("a", t0, true)}, want: "a"},
		{name: "newest ready wins", pods: []corev1.Pod{pod("old", t0, true), pod("new", t0.Add(time.Minute), true)}, want: "new"},
		{name: "terminating skipped", pods: []corev1.Pod{pod("new", t0.Add(time.Minute), true, terminating), pod("old", t0, true)}, want: "old"},
		{
			name:    "nothing ready says why",
			pods:    []corev1.Pod{pod("a", t0, false, waiting("ImagePullBackOff")), pod("b", t0, false)},
			wantWhy: "a: ImagePullBackOff, b: running, not ready",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := pickPod(tt.pods)
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tt.want || why != tt.wantWhy {
				t.Errorf("pickPod = %q, %q; want %q, %q", name, why, tt.want, tt.wantWhy)
			}
		})
	}
}

func TestFindManager(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "traffic-manager", Namespace: "teledock"}}
	ready := pod("tm-1", t0, true)
	unready := pod("tm-1", t0, false, waiting("ContainerCreating"))
	other := pod("tm-1", t0, true)
	other.Namespace = "elsewhere"

	tests := []struct {
		name    string
		objects []runtime.Object
		want    managerTarget
		wantErr error
	}{
		{name: "nothing installed", wantErr: ErrNoManager},
		{name: "installed in another namespace", objects: []runtime.Object{&other}, wantErr: ErrNoManager},
		{name: "service without pods", objects: []runtime.Object{svc}, wantErr: ErrManagerNotReady},
		{name: "pod not ready", objects: []runtime.Object{svc, &unready}, wantErr: ErrManagerNotReady},
		{name: "ready pod, named port", objects: []runtime.Object{svc, &ready}, want: managerTarget{namespace: "teledock", pod: "tm-1", port: 9090}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{ManagerNamespace: "teledock"}
			if err := cfg.setDefaults(); err != nil {
				t.Fatal(err)
			}
			got, err := findManager(context.Background(), fake.NewClientset(tt.objects...), cfg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("target = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestGRPCPort(t *testing.T) {
	pod := func(ports ...corev1.ContainerPort) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "traffic-manager", Ports: ports}}}}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want int32
	}{
		{"clients' endpoint", pod(corev1.ContainerPort{Name: "grpc", ContainerPort: 8081}, corev1.ContainerPort{Name: "client-api", ContainerPort: 8082}), 8082},
		{"one endpoint for all", pod(corev1.ContainerPort{Name: "grpc", ContainerPort: 9000}), 9000},
		{"no named port", pod(), 8081},
	}
	for _, tt := range tests {
		if got := grpcPort(tt.pod, 8081); got != tt.want {
			t.Errorf("%s: port %d, want %d", tt.name, got, tt.want)
		}
	}
}
