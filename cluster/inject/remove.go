package inject

import (
	"context"
	"errors"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"teledock.dev/teledock/cluster/workload"
)

// RemoveAgent restores a workload's pod template (see workload.Restore) and, when its controller
// does not roll out on its own (a bare ReplicaSet, an OnDelete StatefulSet), deletes its pods that
// have an agent, so that none keeps running with one. The workload's agent config must be gone
// first, or the webhook injects the agent again into the pods that follow.
func RemoveAgent(ctx context.Context, k8s kubernetes.Interface, wl workload.Workload) error {
	if _, err := workload.Restore(ctx, k8s, wl); err != nil {
		return err
	}
	w, err := workload.GetKind(ctx, k8s, wl.Kind, wl.Namespace, wl.Name)
	if errors.Is(err, workload.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if w.RollsOut {
		return nil
	}
	pods, err := workload.Pods(ctx, k8s, w)
	if err != nil {
		return err
	}
	withAgent := slices.DeleteFunc(pods, func(p corev1.Pod) bool { return !HasAgent(&p) })
	return workload.DeletePods(ctx, k8s, withAgent)
}
