package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrNoManager means the manager namespace holds neither the traffic-manager Service nor its pods:
// teledock is not installed there.
var ErrNoManager = errors.New("no traffic-manager in the manager namespace")

// ErrManagerNotReady means the traffic-manager exists but none of its pods is ready (yet).
var ErrManagerNotReady = errors.New("traffic-manager has no ready pod")

// managerTarget is the pod and port a port-forward goes to.
type managerTarget struct {
	namespace string
	pod       string
	port      int32
	// rawPort is the manager's framed tunnels' port ("client-raw"), 0 when the pod has none.
	rawPort int32
}

func (t managerTarget) String() string {
	return fmt.Sprintf("pod/%s.%s:%d", t.pod, t.namespace, t.port)
}

// findManager picks the pod to port-forward to. It lists pods on every call instead of caching the
// choice: a reconnect usually follows a manager restart, and the old pod is then gone.
func findManager(ctx context.Context, k kubernetes.Interface, cfg Config) (managerTarget, error) {
	pods, err := k.CoreV1().Pods(cfg.ManagerNamespace).List(ctx, metav1.ListOptions{LabelSelector: cfg.ManagerSelector})
	if err != nil {
		return managerTarget{}, fmt.Errorf("list traffic-manager pods in namespace %s: %w", cfg.ManagerNamespace, err)
	}
	pod, why := pickPod(pods.Items)
	if pod == nil {
		if len(pods.Items) > 0 {
			return managerTarget{}, fmt.Errorf("%w: %s", ErrManagerNotReady, why)
		}
		// No pods: a Service alone means the Deployment is scaled to zero or its pods cannot be
		// created (quota, admission); no Service either means nothing was installed.
		_, err := k.CoreV1().Services(cfg.ManagerNamespace).Get(ctx, cfg.ManagerService, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return managerTarget{}, fmt.Errorf("namespace %s: %w", cfg.ManagerNamespace, ErrNoManager)
		case err != nil:
			return managerTarget{}, fmt.Errorf("get service %s/%s: %w", cfg.ManagerNamespace, cfg.ManagerService, err)
		default:
			return managerTarget{}, fmt.Errorf("%w: service %s/%s has no pods matching %q",
				ErrManagerNotReady, cfg.ManagerNamespace, cfg.ManagerService, cfg.ManagerSelector)
		}
	}
	return managerTarget{namespace: pod.Namespace, pod: pod.Name, port: grpcPort(pod, cfg.ManagerPort),
		rawPort: namedPort(pod, "client-raw")}, nil
}

// pickPod returns the newest ready pod that is not being deleted, or nil and a short reason that
// names each pod's state, so that "not ready" errors say what the pods are doing.
func pickPod(pods []corev1.Pod) (*corev1.Pod, string) {
	var ready []*corev1.Pod
	var states []string
	for i := range pods {
		p := &pods[i]
		switch {
		case p.DeletionTimestamp != nil:
			states = append(states, p.Name+": terminating")
		case !isReady(p):
			states = append(states, p.Name+": "+podState(p))
		default:
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return nil, strings.Join(states, ", ")
	}
	// The newest pod is the one a rolling update keeps; ties are broken by name for stable choices.
	slices.SortFunc(ready, func(a, b *corev1.Pod) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return ready[0], ""
}

func isReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podState describes a pod that is not ready the way `kubectl get pods` would: a waiting container's
// reason (ImagePullBackOff, CrashLoopBackOff, ...) says more than the phase.
func podState(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
	}
	if p.Status.Phase == corev1.PodRunning {
		return "running, not ready"
	}
	if p.Status.Phase == "" {
		return "pending"
	}
	return strings.ToLower(string(p.Status.Phase))
}

// grpcPort is the manager's clients' endpoint: the container port named "client-api" (a loopback
// listener, reached by port-forward), so that the chart can move it without a client change; else
// "grpc" (a manager that serves clients and agents on one port); else fallback.
func grpcPort(p *corev1.Pod, fallback int32) int32 {
	for _, name := range []string{"client-api", "grpc"} {
		if port := namedPort(p, name); port > 0 {
			return port
		}
	}
	return fallback
}

// namedPort is the number of p's container port called name, or 0.
func namedPort(p *corev1.Pod, name string) int32 {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == name && port.ContainerPort > 0 {
				return port.ContainerPort
			}
		}
	}
	return 0
}
