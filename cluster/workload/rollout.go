package workload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// AnnotationRollout is the pod-template annotation that teledock sets to make a workload's
// controller replace its pods, so that the agent injector sees them again. Its value identifies
// the agent config the pods are rolled out for. Uninstalling removes it, which restores the
// template exactly: a Deployment then goes back to its original ReplicaSet.
const AnnotationRollout = "teledock.dev/agent-rollout"

// fieldManager names teledock as the author of its changes to workloads.
const fieldManager = "teledock"

const templateAnnotations = "/spec/template/metadata/annotations"

// Rollout sets the rollout annotation of the workload's pod template to value. The controller of
// a Deployment or a rolling StatefulSet then replaces the pods; for the others (see
// Workload.RollsOut) the caller must delete the pods. Setting the value it already has changes
// nothing.
func Rollout(ctx context.Context, c kubernetes.Interface, w Workload, value string) error {
	if w.Template.Annotations[AnnotationRollout] == value {
		return nil
	}
	patch, err := json.Marshal(map[string]any{
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{AnnotationRollout: value},
		}}},
	})
	if err != nil {
		return fmt.Errorf("%s: rollout patch: %w", w, err)
	}
	if err := patchWorkload(ctx, c, w, types.MergePatchType, patch); err != nil {
		return fmt.Errorf("%s: roll out: %w", w, err)
	}
	return nil
}

// Restore removes the rollout annotation from the workload's pod template, and the annotations
// map itself when teledock's was its only entry (it had none before: the API server does not
// keep an empty map). It reports whether the template changed. It re-reads the workload, so w
// only has to name it; a workload that is gone needs no restoring.
func Restore(ctx context.Context, c kubernetes.Interface, w Workload) (bool, error) {
	changed := false
	err := retry.OnError(retry.DefaultRetry, isRetryable, func() error {
		cur, err := GetKind(ctx, c, w.Kind, w.Namespace, w.Name)
		if err != nil {
			return err
		}
		patch, ok, err := restorePatch(cur.Template.Annotations)
		if err != nil || !ok {
			return err
		}
		if err := patchWorkload(ctx, c, cur, types.JSONPatchType, patch); err != nil {
			return err
		}
		changed = true
		return nil
	})
	if errors.Is(err, ErrNotFound) || apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: restore pod template: %w", w, err)
	}
	return changed, nil
}

// restorePatch is the JSON patch that removes the rollout annotation, or ok=false when there is
// none. The test operation makes the patch fail, and Restore retry on fresh data, when someone
// changed the annotation in between.
func restorePatch(annotations map[string]string) (patch []byte, ok bool, err error) {
	value, present := annotations[AnnotationRollout]
	if !present {
		return nil, false, nil
	}
	key := templateAnnotations + "/" + escapePointer(AnnotationRollout)
	ops := []map[string]any{{"op": "test", "path": key, "value": value}}
	if len(annotations) == 1 {
		ops = append(ops, map[string]any{"op": "remove", "path": templateAnnotations})
	} else {
		ops = append(ops, map[string]any{"op": "remove", "path": key})
	}
	patch, err = json.Marshal(ops)
	if err != nil {
		return nil, false, fmt.Errorf("restore patch: %w", err)
	}
	return patch, true, nil
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// isRetryable is a lost race: an update conflict, or a failed test operation, which the API
// server reports as an invalid request.
func isRetryable(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsInvalid(err)
}

func patchWorkload(ctx context.Context, c kubernetes.Interface, w Workload, pt types.PatchType, data []byte) error {
	opts := metav1.PatchOptions{FieldManager: fieldManager}
	var err error
	switch w.Kind {
	case KindDeployment:
		_, err = c.AppsV1().Deployments(w.Namespace).Patch(ctx, w.Name, pt, data, opts)
	case KindReplicaSet:
		_, err = c.AppsV1().ReplicaSets(w.Namespace).Patch(ctx, w.Name, pt, data, opts)
	case KindStatefulSet:
		_, err = c.AppsV1().StatefulSets(w.Namespace).Patch(ctx, w.Name, pt, data, opts)
	default:
		err = fmt.Errorf("%w: kind %q", ErrNotFound, w.Kind)
	}
	return err
}

// DeletePods deletes the pods, so that a controller that does not roll out (see
// Workload.RollsOut) replaces them. Pods already gone are no error.
func DeletePods(ctx context.Context, c kubernetes.Interface, pods []corev1.Pod) error {
	for _, p := range pods {
		uid := p.UID
		err := c.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return nil
}
