package install

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

// RemoveAgents removes the traffic-agents that the install in cfg.Namespace injected, in every
// namespace, and leaves the workloads exactly as they were before it touched them:
//
//   - it deletes that install's entries from each namespace's agent-config ConfigMap
//     (inject.ConfigMapName), and the ConfigMap when nothing else is left in it, first, so that
//     the webhook injects nothing into the pods that follow. Entries whose agents dial another
//     install's manager stay: that install's agents and intercepts are not this one's;
//   - it restores the pod template of every workload that one of its entries names or that
//     carries the rollout annotation (workload.AnnotationRollout) without another install's
//     entry: the annotation goes, and the template's annotations map with it when that was its
//     only entry. The changed template makes a Deployment or a rolling StatefulSet replace its
//     pods with agent-less ones; a Deployment goes back to its original ReplicaSet;
//   - for ReplicaSets and OnDelete StatefulSets, which do not replace pods on their own, it
//     deletes the pods that have an agent.
//
// It does not wait for the new pods. It is idempotent: a second run finds nothing to do, and a
// workload left annotated by an interrupted run is still found. Only Kubeconfig, Context,
// Namespace, Events and Log of cfg are used. `teledock uninstall --agents` calls it, and a full
// uninstall should call it before it removes the manager (whose webhook would otherwise be gone
// with the agents' configs still in place).
func RemoveAgents(ctx context.Context, cfg Config) error {
	if cfg.Events == nil {
		cfg.Events = func(Event) {}
	}
	if cfg.Namespace == "" {
		return errors.New("remove agents: no manager namespace")
	}
	k8s, err := kubeClient(configFlags(cfg))
	if err != nil {
		return err
	}
	return removeAgents(ctx, k8s, []string{metav1.NamespaceAll}, cfg.Namespace, cfg.Events)
}

// ownedBy reports whether a config's agents dial the manager installed in managerNS: the chart's
// Service, traffic-manager.NAMESPACE (maybe fully qualified).
func ownedBy(c agentconfig.Config, managerNS string) bool {
	host, _, err := net.SplitHostPort(c.ManagerAddress)
	if err != nil {
		return false
	}
	svc := "traffic-manager." + managerNS
	return host == svc || strings.HasPrefix(host, svc+".")
}

// removeAgents is RemoveAgents in the namespaces (metav1.NamespaceAll for every one); tests on a
// shared cluster keep to their own.
func removeAgents(ctx context.Context, k8s kubernetes.Interface, namespaces []string, managerNS string, events EventFunc) error {
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
	same := func(a, b workload.Workload) bool {
		return a.Kind == b.Kind && a.Namespace == b.Namespace && a.Name == b.Name
	}
	var targets, others []workload.Workload
	add := func(w workload.Workload) {
		if !slices.ContainsFunc(targets, func(x workload.Workload) bool { return same(x, w) }) {
			targets = append(targets, w)
		}
	}
	// changed are the ConfigMaps to delete (no Data left) or to update (other installs' entries left).
	var changed []corev1.ConfigMap
	for _, cm := range cms {
		if cm.Name != inject.ConfigMapName {
			continue
		}
		keep := map[string]string{}
		for key, data := range cm.Data {
			c, err := agentconfig.Parse([]byte(data))
			switch {
			case err != nil:
				// A config that does not parse names no kind and no manager; it goes, and the
				// annotation scan below finds its workload if it was rolled out.
			case ownedBy(c, managerNS):
				add(workload.Workload{Kind: c.WorkloadKind, Namespace: cm.Namespace, Name: c.WorkloadName})
			default:
				keep[key] = data
				others = append(others, workload.Workload{Kind: c.WorkloadKind, Namespace: cm.Namespace, Name: c.WorkloadName})
			}
		}
		if len(keep) == len(cm.Data) {
			continue
		}
		cm.Data = keep
		changed = append(changed, cm)
	}
	for _, w := range all {
		if _, ok := w.Template.Annotations[workload.AnnotationRollout]; ok &&
			!slices.ContainsFunc(others, func(x workload.Workload) bool { return same(x, w) }) {
			add(w)
		}
	}

	var errs []error
	for _, cm := range changed {
		var err error
		if len(cm.Data) == 0 {
			err = k8s.CoreV1().ConfigMaps(cm.Namespace).Delete(ctx, cm.Name, metav1.DeleteOptions{
				Preconditions: &metav1.Preconditions{ResourceVersion: &cm.ResourceVersion},
			})
		} else {
			_, err = k8s.CoreV1().ConfigMaps(cm.Namespace).Update(ctx, &cm, metav1.UpdateOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			// A conflict means a manager changed it meanwhile: run again.
			errs = append(errs, fmt.Errorf("remove agent configs of namespace %s: %w", cm.Namespace, err))
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
