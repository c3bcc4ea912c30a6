package install

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// waitReady polls the Deployment until its current generation is rolled out and available, emitting
// an EventWaiting whenever the picture changes. When ctx ends first, the error wraps ErrNotReady
// and says what the pods are stuck on, so that a missing image or a crash loop is reported instead
// of a bare timeout.
func waitReady(ctx context.Context, k8s kubernetes.Interface, ns, name string, poll time.Duration, emit EventFunc) error {
	t := time.NewTicker(poll)
	defer t.Stop()
	var last Event
	for {
		ev := Event{Kind: EventWaiting, Namespace: ns}
		d, err := k8s.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			ev.Desired = desiredReplicas(d)
			ev.Ready = d.Status.AvailableReplicas
			if rolledOut(d) {
				ev.Kind = EventReady
				emit(ev)
				return nil
			}
			ev.Reason = podProblems(ctx, k8s, d)
		case apierrors.IsNotFound(err):
			ev.Reason = "deployment " + name + " not found"
		case ctx.Err() == nil:
			ev.Reason = fmt.Sprintf("get deployment %s: %v", name, err)
		}
		if ev != last {
			emit(ev)
			last = ev
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("%d of %d pods ready", last.Ready, last.Desired)
			if last.Reason != "" {
				msg += ": " + last.Reason
			}
			return fmt.Errorf("%w in %s after waiting (%s): %w", ErrNotReady, ns, msg, context.Cause(ctx))
		case <-t.C:
		}
	}
}

func desiredReplicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// rolledOut reports whether the Deployment's controller has seen its current spec and every
// desired pod runs that spec and is available (kubectl rollout status's test).
func rolledOut(d *appsv1.Deployment) bool {
	want := desiredReplicas(d)
	s := d.Status
	return s.ObservedGeneration >= d.Generation &&
		s.UpdatedReplicas == want &&
		s.Replicas == want && // no pod of an older spec left
		s.AvailableReplicas == want
}

// podProblems describes why the Deployment's pods are not ready, from their status: scheduling
// failures and containers waiting for a reason other than being created.
func podProblems(ctx context.Context, k8s kubernetes.Interface, d *appsv1.Deployment) string {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		sel = labels.Everything()
	}
	pods, err := k8s.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return ""
	}
	var out []string
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				out = append(out, fmt.Sprintf("pod %s: %s: %s", p.Name, c.Reason, c.Message))
			}
		}
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil && !isStarting(w.Reason) {
				out = append(out, fmt.Sprintf("pod %s: container %s: %s: %s", p.Name, cs.Name, w.Reason, w.Message))
			}
		}
	}
	return strings.Join(out, "; ")
}

// isStarting reports waiting reasons that are a normal part of starting a container.
func isStarting(reason string) bool {
	return reason == "" || reason == "ContainerCreating" || reason == "PodInitializing"
}
