package manager

import (
	"context"
	"errors"
	"fmt"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

// planAnnotated plans and stores the agent config of a workload whose pod template carries the
// inject-container-ports annotation, for the webhook admitting one of its pods: such a workload
// gets its agent when it is deployed instead of through a rollout at its first intercept. It
// rolls nothing out: the pods being created get the agent from the webhook, and a template that
// just gained the annotation is being rolled out already.
func (m *Manager) planAnnotated(ctx context.Context, namespace, kind, name string) (agentconfig.Config, error) {
	// The webhook's deadline bounds the wait behind a CreateIntercept's apply.
	unlock, err := m.lockApply(ctx)
	if err != nil {
		return agentconfig.Config{}, err
	}
	defer unlock()
	wl, err := workload.GetKind(ctx, m.k8s, kind, namespace, name)
	if errors.Is(err, workload.ErrNotFound) {
		return agentconfig.Config{}, fmt.Errorf("%w: %w", inject.ErrNoConfig, err)
	}
	if err != nil {
		return agentconfig.Config{}, err
	}
	if !annotated(wl.Template) {
		// The pod's annotations are the template's; a pod annotated on its own plans nothing.
		return agentconfig.Config{}, fmt.Errorf("%w: %s has no %s annotation", inject.ErrNoConfig, wl, inject.AnnotationInjectPorts)
	}

	// Another pod of the workload may have stored one since the webhook looked. Configs are
	// keyed by name only, so one of another kind must not be overwritten.
	stored, err := m.store.AgentConfig(ctx, namespace, name)
	switch {
	case err == nil && stored.WorkloadKind == kind:
		return stored, nil
	case err == nil:
		return agentconfig.Config{}, fmt.Errorf("%s: the agent config named %s is the %s's", wl, name, stored.WorkloadKind)
	case !errors.Is(err, inject.ErrNoConfig) && !errors.Is(err, agentconfig.ErrInvalid):
		return agentconfig.Config{}, err
	}

	cfg, err := m.plan(ctx, wl)
	if err != nil {
		return agentconfig.Config{}, err
	}
	if err := m.store.Put(ctx, cfg); err != nil {
		return agentconfig.Config{}, err
	}
	m.log.Info("agent config stored for an annotated workload", "workload", keyOf(wl).String())
	return cfg, nil
}
