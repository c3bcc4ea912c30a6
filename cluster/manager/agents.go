package manager

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/tunnel"
)

// workloadKey names a workload across the manager's maps.
type workloadKey struct{ namespace, kind, name string }

func (k workloadKey) String() string { return fmt.Sprintf("%s %s/%s", k.kind, k.namespace, k.name) }

// agent is what the manager knows of an arrived traffic-agent.
type agent struct {
	info     *managerv1.AgentInfo
	cfg      agentconfig.Config // as the pod was admitted with it
	cfgJSON  string             // cfg, canonical, to compare configs
	workload workloadKey
	podIP    string
	arrived  time.Time
}

// errNoAgentConfig: the pod has no traffic-agent container, or it carries no valid config.
var errNoAgentConfig = errors.New("no traffic-agent config in the pod")

// podAgentConfig reads the config the injector put in the pod's traffic-agent container. That,
// and not the ConfigMap (which may have changed since), is what the agent runs with.
func podAgentConfig(pod *corev1.Pod) (agentconfig.Config, string, error) {
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == inject.AgentContainerName })
	if i < 0 {
		return agentconfig.Config{}, "", errNoAgentConfig
	}
	for _, e := range pod.Spec.Containers[i].Env {
		if e.Name != agentconfig.EnvConfig {
			continue
		}
		cfg, err := agentconfig.Parse([]byte(e.Value))
		if err != nil {
			return agentconfig.Config{}, "", fmt.Errorf("%w: %w", errNoAgentConfig, err)
		}
		js, err := canonical(cfg)
		return cfg, js, err
	}
	return agentconfig.Config{}, "", errNoAgentConfig
}

func canonical(cfg agentconfig.Config) (string, error) {
	js, err := cfg.JSON()
	return string(js), err
}

// ArriveAgent registers the traffic-agent of a pod. The manager reads the pod to learn the
// agent's config and workload; an agent whose pod it cannot find, or that has no agent config,
// is refused (NotFound, FailedPrecondition).
func (m *Manager) ArriveAgent(ctx context.Context, info *managerv1.AgentInfo) (*managerv1.Session, error) {
	if info.GetPodName() == "" || info.GetNamespace() == "" {
		return nil, status.Error(codes.InvalidArgument, "agent info needs the pod's name and namespace")
	}
	if err := m.authenticateAgent(ctx, info); err != nil {
		return nil, err
	}
	pod, err := m.k8s.CoreV1().Pods(info.GetNamespace()).Get(ctx, info.GetPodName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.NotFound, "pod %s/%s not found", info.GetNamespace(), info.GetPodName())
	}
	if err != nil {
		return nil, grpcError(fmt.Errorf("get pod of agent: %w", err))
	}
	cfg, js, err := podAgentConfig(pod)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	a := &agent{
		info:     proto.CloneOf(info),
		cfg:      cfg,
		cfgJSON:  js,
		workload: workloadKey{cfg.Namespace, cfg.WorkloadKind, cfg.WorkloadName},
		podIP:    cmp.Or(info.GetPodIp(), pod.Status.PodIP),
		arrived:  time.Now(),
	}
	s := m.open(nil, a)
	m.log.Info("agent arrived", "session", s.id, "pod", info.GetPodName(), "namespace", info.GetNamespace(),
		"workload", a.workload.String(), "version", info.GetVersion(), "httpFilters", a.httpFilters())
	m.changes.notify()
	return m.sessionReply(s), nil
}

// WatchAgent streams the agent's targets, first as they are and then whenever they change, and
// the IncomingDials of --to-pod connections it must accept. It ends with the session (its status
// is the session's end: NotFound when it expired) or when the agent cancels.
func (m *Manager) WatchAgent(req *managerv1.SessionRequest, stream managerv1.Manager_WatchAgentServer) error {
	s, err := m.agentSession(req.GetSessionId())
	if err != nil {
		return err
	}
	var last []*managerv1.AgentTarget
	sent := false
	for {
		changed := m.changes.wait()
		if targets := m.agentTargets(s.agent); !sent || !equalTargets(targets, last) {
			if err := stream.Send(&managerv1.AgentUpdate{Targets: targets}); err != nil {
				return err
			}
			last, sent = targets, true
		}
		select {
		case <-changed:
		case d := <-s.dials:
			if !m.broker.Waiting(d.GetConnId()) {
				continue // its initiator gave up already
			}
			if err := stream.Send(&managerv1.AgentUpdate{Dial: d}); err != nil {
				requeue(s, d)
				return err
			}
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		case <-stream.Context().Done():
			return nil
		}
	}
}

// agentTargets says, for each agent port of the agent, where it goes: to the app (one target
// without an intercept id) or to the clients of the ACTIVE intercepts that cover the app port
// behind it, one target each (several only for filtered intercepts and wiretaps, and only to an
// agent that routes them), sorted by intercept id so that an unchanged state compares equal.
func (m *Manager) agentTargets(a *agent) []*managerv1.AgentTarget {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*managerv1.AgentTarget
	seen := make(map[uint16]bool)
	for _, t := range a.cfg.Targets {
		if seen[t.AgentPort] {
			continue
		}
		seen[t.AgentPort] = true
		port := func() *managerv1.AgentTarget {
			return &managerv1.AgentTarget{AgentPort: int32(t.AgentPort), TargetPort: int32(t.ContainerPort), Protocol: protocol(t.Protocol)}
		}
		var ics []*managerv1.AgentTarget
		for _, ic := range m.intercepts {
			if ic.state == stateActive && ic.workload == a.workload && sameBackend(ic.target, t) {
				at := port()
				at.InterceptId, at.Wiretap = ic.id, ic.wiretap
				if ic.filtered() {
					at.HttpFilter = proto.CloneOf(ic.filter)
				}
				ics = append(ics, at)
			}
		}
		if !a.httpFilters() {
			ics = oneTargetPerPort(ics)
		}
		if len(ics) == 0 {
			out = append(out, port())
			continue
		}
		slices.SortFunc(ics, func(x, y *managerv1.AgentTarget) int { return strings.Compare(x.GetInterceptId(), y.GetInterceptId()) })
		out = append(out, ics...)
	}
	return out
}

func equalTargets(a, b []*managerv1.AgentTarget) bool {
	return slices.EqualFunc(a, b, func(x, y *managerv1.AgentTarget) bool { return proto.Equal(x, y) })
}

func protocol(p agentconfig.Protocol) managerv1.Protocol {
	return tunnel.ProtocolOf(p.Network()) // a validated Config has TCP or UDP only
}

// agentsOf returns the live agents of a workload, newest first; with cfgJSON set, only those
// running that config.
func (m *Manager) agentsOf(key workloadKey, cfgJSON string) []*session {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*session
	for _, s := range m.sessions {
		if s.agent == nil || s.agent.workload != key || now.After(s.expires) {
			continue
		}
		if cfgJSON != "" && s.agent.cfgJSON != cfgJSON {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *session) int { return b.agent.arrived.Compare(a.agent.arrived) })
	return out
}
