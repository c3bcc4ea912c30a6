package manager

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

// The workload states of ListWorkloads, as the CLI prints them.
const (
	stateNotInstalled = "ready to intercept (traffic-agent not yet installed)"
	stateInstalled    = "ready to intercept (traffic-agent already installed)"
	stateIntercepted  = "intercepted"
)

// ListWorkloads lists the namespace's Deployments, ReplicaSets that no Deployment controls, and
// StatefulSets that a service selects or that carry the inject-container-ports annotation, with
// their state: intercepted (an ACTIVE intercept), ready with or without an agent in their pods,
// or "not interceptable: REASON" when no agent could be planned for them.
func (m *Manager) ListWorkloads(ctx context.Context, req *managerv1.ListWorkloadsRequest) (*managerv1.ListWorkloadsResponse, error) {
	s, err := m.clientSession(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	out, err := m.listWorkloads(ctx, cmp.Or(req.GetNamespace(), s.client.GetNamespace()))
	if err != nil {
		return nil, grpcError(err)
	}
	return &managerv1.ListWorkloadsResponse{Workloads: out}, nil
}

func (m *Manager) listWorkloads(ctx context.Context, namespace string) ([]*managerv1.WorkloadInfo, error) {
	wls, err := workload.List(ctx, m.k8s, namespace)
	if err != nil {
		return nil, err
	}
	svcs, err := m.k8s.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	pods, err := workload.PodsByWorkload(ctx, m.k8s, namespace)
	if err != nil {
		return nil, err
	}
	intercepts, err := m.ListIntercepts(ctx, &managerv1.ListInterceptsRequest{})
	if err != nil {
		return nil, err
	}

	var out []*managerv1.WorkloadInfo
	for _, wl := range wls {
		services := selectingServices(wl.Template, svcs.Items)
		if len(services) == 0 && !annotated(wl.Template) {
			continue
		}
		info := &managerv1.WorkloadInfo{
			Kind: wl.Kind, Name: wl.Name, Namespace: wl.Namespace, Services: services,
			AgentInstalled: slices.ContainsFunc(pods[workload.Ref{Kind: wl.Kind, Name: wl.Name}], func(p corev1.Pod) bool { return inject.HasAgent(&p) }),
		}
		active := false
		for _, ic := range intercepts.GetIntercepts() {
			if ic.GetNamespace() == wl.Namespace && ic.GetWorkloadKind() == wl.Kind && ic.GetWorkload() == wl.Name {
				ic.Environment = nil // not wanted in a listing
				info.Intercepts = append(info.Intercepts, ic)
				active = active || ic.GetState() == stateActive
			}
		}
		switch {
		case active:
			info.State = stateIntercepted
		case info.AgentInstalled:
			info.State = stateInstalled
		default:
			info.State = stateNotInstalled
		}
		if !active {
			_, err := inject.Plan(injectWorkload(wl), svcs.Items, m.settings)
			if err != nil && !errors.Is(err, inject.ErrSettings) {
				info.State = "not interceptable: " + err.Error()
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// selectingServices names the services whose selector matches the pod template's labels. A
// service without a selector selects nothing (its endpoints are managed by hand), and an
// ExternalName service has no endpoints: the same rules as inject.Plan's.
func selectingServices(tmpl corev1.PodTemplateSpec, svcs []corev1.Service) []string {
	var out []string
	for _, svc := range svcs {
		if svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(tmpl.Labels)) {
			out = append(out, svc.Name)
		}
	}
	slices.Sort(out)
	return out
}

func annotated(tmpl corev1.PodTemplateSpec) bool {
	_, a := tmpl.Annotations[inject.AnnotationInjectPorts]
	_, b := tmpl.Annotations[inject.LegacyAnnotationInjectPorts]
	return a || b
}
