package install

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

// RemoveAgents removes the traffic-agents that teledock injected, in every namespace, and leaves
// the workloads exactly as they were before teledock touched them:
//
//   - it deletes each namespace's agent-config ConfigMap (inject.ConfigMapName) first, so that
//     the webhook injects nothing into the pods that follow;
//   - it restores the pod template of every workload that a ConfigMap names or that carries the
//     rollout annotation (workload.AnnotationRollout): the annotation goes, and the template's
//     annotations map with it when that was its only entry. The changed template makes a
//     Deployment or a rolling StatefulSet replace its pods with agent-less ones; a Deployment
//     goes back to its original ReplicaSet;
//   - for ReplicaSets and OnDelete StatefulSets, which do not replace pods on their own, it
//     deletes the pods that have an agent.
//
// It does not wait for the new pods. It is idempotent: a second run finds nothing to do, and a
// workload left annotated by an interrupted run is still found. Only Kubeconfig, Context, Events
// and Log of cfg are used. `teledock uninstall --agents` calls it, and a full uninstall should
// call it before it removes the manager (whose webhook would otherwise be gone with the agents'
// configs still in place).
func RemoveAgents(ctx context.Context, cfg Config) error {
	if cfg.Events == nil {
		cfg.Events = func(Event) {}
	}
	k8s, err := kubeClient(configFlags(cfg))
	if err != nil {
		return err
	}
	return removeAgents(ctx, k8s, []string{metav1.NamespaceAll}, cfg.Events)
}

// removeAgents is RemoveAgents in the namespaces (metav1.NamespaceAll for every one); tests on a
// shared cluster keep to their own.
func removeAgents(ctx context.Context, k8s kubernetes.Interface, namespaces []string, events EventFunc) error {
	var cms []corev1.ConfigMap
	var all []workload.Workload
	for _, ns := range namespaces {
		list, err := k8s.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + inject.ConfigMapName})
		if err != nil {
			return fmt.Errorf("list agent configs: %w", err)
		}
		cms = append(cms, list.Items...)
		wls, err := workload.List(ctx, k8s, ns)
		if err != nil {
			return fmt.Errorf("list workloads: %w", err)
		}
		all = append(all, wls...)
	}
	var targets []workload.Workload
	add := func(w workload.Workload) {
		if !slices.ContainsFunc(targets, func(x workload.Workload) bool {
			return x.Kind == w.Kind && x.Namespace == w.Namespace && x.Name == w.Name
		}) {
			targets = append(targets, w)
		}
	}
	var agentCMs []corev1.ConfigMap
	for _, cm := range cms {
		if cm.Name != inject.ConfigMapName {
			continue
		}
		agentCMs = append(agentCMs, cm)
		for _, data := range cm.Data {
			// A config that does not parse names no kind; the annotation scan below finds its
			// workload if it was rolled out.
			if c, err := agentconfig.Parse([]byte(data)); err == nil {
				add(workload.Workload{Kind: c.WorkloadKind, Namespace: cm.Namespace, Name: c.WorkloadName})
			}
		}
	}
	for _, w := range all {
		if _, ok := w.Template.Annotations[workload.AnnotationRollout]; ok {
			add(w)
		}
	}

	var errs []error
	for _, cm := range agentCMs {
		err := k8s.CoreV1().ConfigMaps(cm.Namespace).Delete(ctx, cm.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete agent configs of namespace %s: %w", cm.Namespace, err))
		}
	}
	if len(errs) > 0 {
		// Restoring templates while the webhook still finds configs would inject the agents
		// right back.
		return errors.Join(errs...)
	}
	slices.SortFunc(targets, func(a, b workload.Workload) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
	})
	for _, t := range targets {
		if err := inject.RemoveAgent(ctx, k8s, t); err != nil {
			errs = append(errs, err)
			continue
		}
		events(Event{Kind: EventAgentRemoved, Namespace: t.Namespace, Workload: t.Kind + "/" + t.Name})
	}
	return errors.Join(errs...)
}
