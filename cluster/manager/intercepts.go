package manager

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
	"teledock.dev/teledock/internal/httpfilter"
)

// Intercept states.
const (
	stateWaiting = "WAITING" // created, waiting for an agent with its config
	stateActive  = "ACTIVE"  // agents send its connections to the client
)

// restoreTimeout bounds the restore of a workload that a departed client left replaced.
const restoreTimeout = 30 * time.Second

// intercept is one client's intercept of one target (app port) of a workload. Fields are guarded
// by Manager.mu, except id, name and session, which never change.
type intercept struct {
	id      string
	name    string
	session *session

	workload    workloadKey
	target      agentconfig.Target
	replace     bool
	toPod       []*managerv1.ToPod
	destination string
	localPort   int32
	state       string
	env         map[string]string
	podAddress  string
	mounts      []*managerv1.VolumeMount
	filter      *managerv1.HttpFilter // nil: whole connections
	wiretap     bool
	// counters are the agents' latest reports (filtered intercepts and wiretaps), by pod.
	counters map[string]*managerv1.InterceptCounters
}

func (ic *intercept) info() *managerv1.InterceptInfo {
	t := ic.target
	info := &managerv1.InterceptInfo{
		Id:                    ic.id,
		Name:                  ic.name,
		Namespace:             ic.workload.namespace,
		Workload:              ic.workload.name,
		WorkloadKind:          ic.workload.kind,
		State:                 ic.state,
		Service:               t.ServiceName,
		ServicePortIdentifier: portID(t),
		ServicePort:           int32(t.ServicePort),
		TargetPort:            int32(t.ContainerPort),
		Protocol:              protocol(t.Protocol),
		Destination:           ic.destination,
		LocalPort:             ic.localPort,
		SessionId:             ic.session.id,
		Client:                clientName(ic.session.client),
		Environment:           maps.Clone(ic.env),
		PodAddress:            ic.podAddress,
		Replace:               ic.replace,
		ToPod:                 cloneToPod(ic.toPod),
		ServiceLess:           t.Serviceless(),
		Mounts:                cloneMounts(ic.mounts),
		HttpFilter:            describeFilter(ic.filter),
		Filter:                proto.CloneOf(ic.filter),
		Wiretap:               ic.wiretap,
	}
	if ic.perRequest() {
		info.Counters = sumCounters(ic.counters)
	}
	return info
}

func cloneMounts(in []*managerv1.VolumeMount) []*managerv1.VolumeMount {
	out := make([]*managerv1.VolumeMount, len(in))
	for i, m := range in {
		out[i] = proto.CloneOf(m)
	}
	return out
}

func cloneToPod(in []*managerv1.ToPod) []*managerv1.ToPod {
	out := make([]*managerv1.ToPod, len(in))
	for i, tp := range in {
		out[i] = proto.CloneOf(tp)
	}
	return out
}

// CreateIntercept creates an intercept, or changes the session's intercept of that name (another
// port, --replace, --to-pod). See the proto for the contract; the steps:
//  1. find the workload (NotFound) and plan its agent config from its services and annotation;
//  2. pick the target from --service and --port (FailedPrecondition when ambiguous or unknown);
//  3. claim it (FailedPrecondition when another intercept has that port, or the name is in use
//     for another workload);
//  4. store the config and roll the workload out when its pods do not run that config;
//  5. wait, within the request's deadline, for an agent running that config (DeadlineExceeded
//     with what the pods and events say); a filtered intercept or wiretap also needs those agents
//     to route HTTP (FailedPrecondition for agents of an older version);
//  6. activate it (agents are told) and return it with the container's environment.
//
// A failed request leaves no intercept behind and undoes a --replace it caused.
func (m *Manager) CreateIntercept(ctx context.Context, req *managerv1.CreateInterceptRequest) (*managerv1.InterceptInfo, error) {
	info, err := m.createIntercept(ctx, req)
	if err != nil {
		m.log.Info("intercept not created", "name", req.GetName(), "workload", cmp.Or(req.GetWorkload(), req.GetName()), "error", err)
		return nil, grpcError(err)
	}
	return info, nil
}

func (m *Manager) createIntercept(ctx context.Context, req *managerv1.CreateInterceptRequest) (*managerv1.InterceptInfo, error) {
	s, err := m.clientSession(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	if err := validateCreate(req); err != nil {
		return nil, err
	}
	namespace := cmp.Or(req.GetNamespace(), s.client.GetNamespace())
	name := cmp.Or(req.GetWorkload(), req.GetName())

	unlock, err := m.lockApply(ctx)
	if err != nil {
		return nil, err
	}
	wl, err := workload.Get(ctx, m.k8s, namespace, name)
	if err != nil {
		unlock()
		return nil, err
	}
	cfg, err := m.plan(ctx, wl)
	if err != nil {
		unlock()
		return nil, err
	}
	target, err := chooseTarget(cfg, wl.String(), req.GetService(), req.GetPort())
	if err == nil {
		err = checkFilterTarget(req, target)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	ic, undo, err := m.claim(s, req, keyOf(wl), target)
	if err != nil {
		unlock()
		return nil, err
	}
	cfg.Replace = m.replaced(ic.workload)
	started := time.Now()
	rollout, err := m.apply(ctx, wl, cfg)
	unlock()
	if err != nil {
		m.abandon(ic, undo)
		m.unrollLater(wl) // apply may have stored the config before it failed
		return nil, err
	}

	js, err := canonical(cfg)
	if err != nil {
		m.abandon(ic, undo)
		return nil, err
	}
	// The wait ends with the session too: a departed client's intercept is gone.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(s.ctx, func() { cancel(context.Cause(s.ctx)) })()
	a, err := m.awaitAgent(wctx, wl, target, js, rollout, started)
	if err != nil {
		m.abandon(ic, undo)
		if errors.Is(err, errNoAgent) {
			// Done before answering, so the client's error says the workload is as it was.
			m.unroll(context.WithoutCancel(ctx), wl)
		} else {
			// The client gave up (Ctrl-C), its session ended, or the manager is stopping: the
			// config and rollout must not outlive the attempt all the same.
			m.unrollLater(wl)
		}
		return nil, err
	}
	if err := m.checkFilterAgents(req, wl, js); err != nil {
		m.abandon(ic, undo)
		return nil, err
	}
	env, podAddr, mounts := m.environment(ctx, a, target)

	m.mu.Lock()
	if m.intercepts[ic.id] != ic {
		// Removed meanwhile: by the client, or with its session.
		m.mu.Unlock()
		return nil, fmt.Errorf("%w named %q: it was removed while it was being created", errNoIntercept, ic.name)
	}
	ic.state, ic.env, ic.podAddress, ic.mounts = stateActive, env, podAddr, mounts
	info := ic.info()
	m.mu.Unlock()
	m.changes.notify()
	m.log.Info("intercept active", "intercept", ic.id, "name", ic.name, "client", clientName(s.client),
		"workload", ic.workload.String(), "port", portLabel(target), "replace", ic.replace)
	return info, nil
}

// unroll takes back the config and the rollout of a workload whose agent never came, so that a
// failed first intercept leaves the workload as it was (pods without a stuck agent). It does nothing
// while an agent of the workload is connected or an intercept claims it.
func (m *Manager) unroll(ctx context.Context, wl workload.Workload) {
	ctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	unlock, err := m.lockApply(ctx)
	if err != nil {
		return
	}
	defer unlock()
	key := keyOf(wl)
	if len(m.agentsOf(key, "")) > 0 || m.claimed(key) {
		return
	}
	log := m.log.With("workload", key.String())
	if err := m.store.Delete(ctx, wl.Namespace, wl.Name); err != nil {
		log.Warn("cannot remove the agent config of a failed intercept", "error", err)
		return
	}
	if err := inject.RemoveAgent(ctx, m.k8s, wl); err != nil {
		log.Warn("cannot restore the workload of a failed intercept", "error", err)
		return
	}
	log.Info("first intercept failed: the workload is restored")
}

// unrollLater unrolls in the background, for a create whose client is no longer waiting.
func (m *Manager) unrollLater(wl workload.Workload) {
	m.bg.Go(func() { m.unroll(context.Background(), wl) })
}

// claimed reports whether an intercept of any client claims the workload.
func (m *Manager) claimed(key workloadKey) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ic := range m.intercepts {
		if ic.workload == key {
			return true
		}
	}
	return false
}

func validateCreate(req *managerv1.CreateInterceptRequest) error {
	if req.GetName() == "" {
		return fmt.Errorf("%w: the intercept has no name", errInvalid)
	}
	if mech := req.GetMechanism(); mech != "" && mech != "tcp" {
		return fmt.Errorf("%w: mechanism %q is not supported (only tcp)", errInvalid, mech)
	}
	for _, tp := range req.GetToPod() {
		if tp.GetPort() < 1 || tp.GetPort() > 65535 {
			return fmt.Errorf("%w: --to-pod port %d", errInvalid, tp.GetPort())
		}
	}
	return validateFilter(req)
}

// lockApply takes the right to plan, store and roll out agent configs.
func (m *Manager) lockApply(ctx context.Context) (unlock func(), err error) {
	select {
	case m.applying <- struct{}{}:
		return func() { <-m.applying }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func keyOf(wl workload.Workload) workloadKey { return workloadKey{wl.Namespace, wl.Kind, wl.Name} }

// plan makes the workload's agent config from the services of its namespace.
func (m *Manager) plan(ctx context.Context, wl workload.Workload) (agentconfig.Config, error) {
	svcs, err := m.k8s.CoreV1().Services(wl.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return agentconfig.Config{}, fmt.Errorf("list services: %w", err)
	}
	return inject.Plan(injectWorkload(wl), svcs.Items, m.settings)
}

func injectWorkload(wl workload.Workload) inject.Workload {
	return inject.Workload{Kind: wl.Kind, Name: wl.Name, Namespace: wl.Namespace, Template: wl.Template}
}

// claim records the session's intercept of target as WAITING: a new one, or its intercept of that
// name changed. undo puts back what was there before.
func (m *Manager) claim(s *session, req *managerv1.CreateInterceptRequest, key workloadKey, target agentconfig.Target) (ic *intercept, undo func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions[s.id] != s {
		// It ended after the request began (it may not know yet); its intercepts are removed.
		if err := context.Cause(s.ctx); err != nil {
			return nil, nil, err
		}
		return nil, nil, errDeparted
	}
	var mine *intercept
	for _, x := range m.intercepts {
		if x.session == s && x.name == req.GetName() {
			if x.workload != key {
				return nil, nil, fmt.Errorf("%w: you already use the intercept name %q for %s; leave it first or choose another name",
					errConflict, x.name, x.workload)
			}
			mine = x
			continue
		}
		if x.workload != key {
			continue
		}
		if err := replaceConflict(x, req, target); err != nil {
			return nil, nil, err
		}
		if !sameBackend(x.target, target) {
			continue
		}
		if refused, detail := conflictWith(x, req.GetHttpFilter(), req.GetWiretap()); refused {
			owner := clientName(x.session.client)
			if x.session == s {
				owner = "you"
			}
			return nil, nil, fmt.Errorf("%w: %s port %s is already intercepted by %s (intercept %q%s)",
				errConflict, key, portLabel(target), owner, x.name, detail)
		}
	}
	if mine == nil {
		ic = &intercept{id: newSessionID(), name: req.GetName(), session: s, workload: key}
		m.intercepts[ic.id] = ic
		undo = func() { delete(m.intercepts, ic.id) }
	} else {
		ic = mine
		prev := *mine
		undo = func() { *ic = prev }
	}
	ic.target, ic.replace, ic.state = target, req.GetReplace(), stateWaiting
	ic.toPod = cloneToPod(req.GetToPod())
	ic.destination, ic.localPort = req.GetDestination(), req.GetLocalPort()
	ic.filter, ic.wiretap = nil, req.GetWiretap()
	if httpfilter.Selects(req.GetHttpFilter()) || req.GetHttpFilter().GetPlaintext() {
		ic.filter = proto.CloneOf(req.GetHttpFilter())
	}
	return ic, undo, nil
}

// abandon undoes a claim whose request failed, and then a --replace it caused.
func (m *Manager) abandon(ic *intercept, undo func()) {
	m.mu.Lock()
	undo()
	m.mu.Unlock()
	m.changes.notify()
	m.restoreLater(ic.workload)
}

// replaced names the containers that --replace intercepts of the workload replace, sorted.
func (m *Manager) replaced(key workloadKey) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, ic := range m.intercepts {
		if ic.workload == key && ic.replace && !slices.Contains(out, ic.target.ContainerName) {
			out = append(out, ic.target.ContainerName)
		}
	}
	slices.Sort(out)
	return out
}

// apply stores cfg as the workload's agent config, and rolls the workload out when a pod of it
// does not run that config. It returns the rollout annotation's value for cfg. The caller holds
// lockApply.
func (m *Manager) apply(ctx context.Context, wl workload.Workload, cfg agentconfig.Config) (string, error) {
	js, err := canonical(cfg)
	if err != nil {
		return "", err
	}
	stored, err := m.store.AgentConfig(ctx, wl.Namespace, wl.Name)
	var storedJS string
	switch {
	case err == nil:
		storedJS, _ = canonical(stored)
	case errors.Is(err, inject.ErrNoConfig), errors.Is(err, agentconfig.ErrInvalid):
		// none yet, or one not worth keeping
	default:
		return "", err
	}
	if storedJS != js {
		if err := m.store.Put(ctx, cfg); err != nil {
			return "", err
		}
		m.log.Info("agent config stored", "workload", keyOf(wl).String(), "replace", cfg.Replace)
	}

	rollout := rolloutValue(js)
	pods, err := workload.Pods(ctx, m.k8s, wl)
	if err != nil {
		return "", err
	}
	var stale []corev1.Pod
	for _, p := range pods {
		if _, pjs, err := podAgentConfig(&p); err != nil || pjs != js {
			stale = append(stale, p)
		}
	}
	if len(stale) == 0 {
		return rollout, nil
	}
	if err := workload.Rollout(ctx, m.k8s, wl, rollout); err != nil {
		return "", err
	}
	if !wl.RollsOut {
		if err := workload.DeletePods(ctx, m.k8s, stale); err != nil {
			return "", fmt.Errorf("%s: %w", wl, err)
		}
	}
	m.log.Info("workload rolled out for its agent config", "workload", keyOf(wl).String(), "rollout", rollout, "stalePods", len(stale))
	return rollout, nil
}

// rolloutValue identifies an agent config in the rollout annotation.
func rolloutValue(cfgJSON string) string {
	sum := sha256.Sum256([]byte(cfgJSON))
	return hex.EncodeToString(sum[:8])
}

const (
	// drainPoll is how often awaitAgent looks whether the pods from before a rollout are gone.
	drainPoll = 250 * time.Millisecond
	// proxySettle is how long kube-proxy may take to program a Service's new endpoints once they
	// are in its EndpointSlices: its iptables mode syncs at most once a second (minSyncPeriod).
	proxySettle = time.Second
)

// awaitAgent waits for an agent of the workload running the config, and then for the pods that
// do not run it to go: until they do, the Service still sends them part of the traffic. The
// first wait is required; the second ends at the deadline all the same (the intercept then
// works for the new pods only). With a request deadline it stops early enough to say why no agent
// came before the client gives up.
func (m *Manager) awaitAgent(ctx context.Context, wl workload.Workload, t agentconfig.Target, cfgJSON, rollout string, since time.Time) (*session, error) {
	limit := m.cfg.AgentWait
	explainFor := 3 * time.Second
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		explainFor = min(explainFor, left/5)
		limit = left - explainFor
	}
	timer := time.NewTimer(max(limit, 0))
	defer timer.Stop()
	key := keyOf(wl)
	for {
		changed := m.changes.wait()
		if agents := m.agentsOf(key, cfgJSON); len(agents) > 0 {
			m.awaitDrain(ctx, wl, t, cfgJSON, timer.C)
			return agents[0], nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-timer.C:
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(explainFor, time.Second))
			why := m.explainNoAgent(ectx, wl, cfgJSON, rollout, since)
			cancel()
			return nil, fmt.Errorf("%w: no traffic-agent of %s connected within %v: %s",
				errNoAgent, wl, time.Since(since).Round(time.Second), why)
		}
	}
}

// awaitDrain waits until every pod of the workload that is not being deleted runs the config
// and, for a service target, the Service's ready endpoints are all such pods, or until stop. After
// a wait it gives kube-proxy proxySettle to catch up, so that ACTIVE means connections arrive.
func (m *Manager) awaitDrain(ctx context.Context, wl workload.Workload, t agentconfig.Target, cfgJSON string, stop <-chan time.Time) {
	waited := false
	for {
		drained, err := m.drained(ctx, wl, t, cfgJSON)
		if err != nil {
			m.log.Debug("cannot tell whether the old pods are gone", "workload", keyOf(wl).String(), "error", err)
			return
		}
		if drained {
			break
		}
		waited = true
		select {
		case <-time.After(drainPoll):
		case <-stop:
			m.log.Info("pods from before the rollout still get traffic; the intercept has part of it", "workload", keyOf(wl).String())
			return
		case <-ctx.Done():
			return
		}
	}
	if waited {
		select {
		case <-time.After(proxySettle):
		case <-stop:
		case <-ctx.Done():
		}
	}
}

// drained reports whether the pods without the config are gone from the workload and, for a
// service target, from the Service's ready endpoints, with a pod of the config among them. A
// Service without EndpointSlices (none yet, or a fake cluster) does not hold it up.
func (m *Manager) drained(ctx context.Context, wl workload.Workload, t agentconfig.Target, cfgJSON string) (bool, error) {
	pods, err := workload.AllPods(ctx, m.k8s, wl)
	if err != nil {
		return false, err
	}
	current := make(map[string]bool) // pod name: runs the config
	for _, p := range pods {
		_, pjs, err := podAgentConfig(&p)
		current[p.Name] = err == nil && pjs == cfgJSON
		if p.DeletionTimestamp == nil && !current[p.Name] {
			return false, nil
		}
	}
	if t.Serviceless() {
		return true, nil
	}
	eps, err := m.k8s.DiscoveryV1().EndpointSlices(wl.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + t.ServiceName,
	})
	if err != nil {
		return false, err
	}
	if len(eps.Items) == 0 {
		return true, nil
	}
	ready := 0
	for _, es := range eps.Items {
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready || ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
				continue // kube-proxy sends new connections only to ready endpoints
			}
			runs, ours := current[ep.TargetRef.Name]
			switch {
			case !ours:
				// Another workload's pod that the Service also selects: not ours to wait for.
			case !runs:
				return false, nil // an old pod still takes connections
			default:
				ready++
			}
		}
	}
	return ready > 0, nil
}

// environment resolves the intercepted container's environment in the agent's pod, its volume
// mounts that the agent serves and, for a service-less target, the pod's address. A failure leaves
// them out but does not fail the intercept, which works without them.
func (m *Manager) environment(ctx context.Context, a *session, t agentconfig.Target) (map[string]string, string, []*managerv1.VolumeMount) {
	pod, err := m.k8s.CoreV1().Pods(a.agent.info.GetNamespace()).Get(ctx, a.agent.info.GetPodName(), metav1.GetOptions{})
	if err != nil {
		m.log.Warn("no environment for the intercept: agent pod", "pod", a.agent.info.GetPodName(), "error", err)
		return nil, "", nil
	}
	mounts := servedMounts(pod, t.ContainerName)
	var podAddr string
	if t.Serviceless() {
		if ip, err := netip.ParseAddr(cmp.Or(pod.Status.PodIP, a.agent.podIP)); err == nil {
			podAddr = netip.AddrPortFrom(ip, t.ContainerPort).String()
		}
	}
	env, err := inject.ResolveEnv(ctx, m.k8s, pod, t.ContainerName)
	if err != nil {
		m.log.Warn("no environment for the intercept", "pod", pod.Name, "container", t.ContainerName, "error", err)
		return nil, podAddr, mounts
	}
	return env, podAddr, mounts
}

// servedMounts are the mounts of container that the pod's traffic-agent was given to serve (the
// injector lists them in the agent's environment).
func servedMounts(pod *corev1.Pod, container string) []*managerv1.VolumeMount {
	for _, c := range pod.Spec.Containers {
		if c.Name != inject.AgentContainerName {
			continue
		}
		for _, e := range c.Env {
			if e.Name != agentconfig.EnvMounts {
				continue
			}
			ms, err := agentconfig.ParseMounts(e.Value)
			if err != nil {
				return nil
			}
			var out []*managerv1.VolumeMount
			for _, m := range ms {
				if m.Container == container {
					out = append(out, &managerv1.VolumeMount{Container: m.Container, Path: m.Path, ReadOnly: m.ReadOnly})
				}
			}
			return out
		}
	}
	return nil
}

// RemoveIntercept ends one of the session's intercepts. Agents stop sending its connections to
// the client at once, so the app gets them again without a restart, and the agent stays. Only
// the end of a --replace restarts pods, to give the app its container back.
func (m *Manager) RemoveIntercept(ctx context.Context, req *managerv1.RemoveInterceptRequest) (*managerv1.RemoveInterceptResponse, error) {
	s, err := m.clientSession(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	var ic *intercept
	for _, x := range m.intercepts {
		if x.session == s && x.name == req.GetName() {
			ic = x
			delete(m.intercepts, x.id)
			break
		}
	}
	m.mu.Unlock()
	if ic == nil {
		return nil, grpcError(fmt.Errorf("%w named %q", errNoIntercept, req.GetName()))
	}
	m.changes.notify()
	m.log.Info("intercept removed", "intercept", ic.id, "name", ic.name, "workload", ic.workload.String())
	if ic.replace {
		if err := m.restore(ctx, ic.workload); err != nil {
			// The intercept is gone all the same: try again in the background (the client may
			// have given up waiting), and the periodic reconcile after that.
			m.log.Warn("replaced container not restored yet", "workload", ic.workload.String(), "error", err)
			m.restoreLater(ic.workload)
		}
	}
	return &managerv1.RemoveInterceptResponse{}, nil
}

// removeSessionIntercepts removes the intercepts of a session that ended, and with restore set,
// restores in the background the containers they replaced.
func (m *Manager) removeSessionIntercepts(s *session, restore bool) {
	var replaced []workloadKey
	m.mu.Lock()
	for id, ic := range m.intercepts {
		if ic.session != s {
			continue
		}
		delete(m.intercepts, id)
		m.log.Info("intercept removed with its session", "intercept", ic.id, "name", ic.name, "workload", ic.workload.String())
		if ic.replace && !slices.Contains(replaced, ic.workload) {
			replaced = append(replaced, ic.workload)
		}
	}
	m.mu.Unlock()
	if restore {
		for _, key := range replaced {
			m.restoreLater(key)
		}
	}
}

// restoreLater restores in the background what restore would.
func (m *Manager) restoreLater(key workloadKey) {
	m.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), restoreTimeout)
		defer cancel()
		if err := m.restore(ctx, key); err != nil {
			m.log.Warn("replaced container not restored", "workload", key.String(), "error", err)
		}
	})
}

// restore makes the workload's stored agent config replace exactly the containers that its
// intercepts still replace, and rolls it out when that changed the config.
func (m *Manager) restore(ctx context.Context, key workloadKey) error {
	unlock, err := m.lockApply(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	cfg, err := m.store.AgentConfig(ctx, key.namespace, key.name)
	if errors.Is(err, inject.ErrNoConfig) {
		return nil
	}
	if err != nil {
		return err
	}
	want := m.replaced(key)
	if cfg.WorkloadKind != key.kind || slices.Equal(cfg.Replace, want) {
		return nil
	}
	cfg.Replace = want
	wl, err := workload.GetKind(ctx, m.k8s, key.kind, key.namespace, key.name)
	if errors.Is(err, workload.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = m.apply(ctx, wl, cfg)
	return err
}

// reconcileAll restores the workloads whose stored config (this manager's: its agents dial it)
// replaces containers that no intercept replaces any more: those a previous run left behind.
func (m *Manager) reconcileAll(ctx context.Context) {
	cms, err := m.k8s.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + inject.ConfigMapName})
	if err != nil {
		m.log.Warn("agent configs not reconciled", "error", err)
		return
	}
	for _, cm := range cms.Items {
		if cm.Name != inject.ConfigMapName {
			continue
		}
		for _, data := range cm.Data {
			cfg, err := agentconfig.Parse([]byte(data))
			if err != nil || len(cfg.Replace) == 0 {
				continue
			}
			if cfg.ManagerAddress != m.cfg.AgentManagerAddress {
				// Another install's agent: its intercepts are that manager's to know about.
				continue
			}
			key := workloadKey{cm.Namespace, cfg.WorkloadKind, cfg.WorkloadName}
			if err := m.restore(ctx, key); err != nil {
				m.log.Warn("replaced container not restored", "workload", key.String(), "error", err)
			}
		}
	}
}

// ListIntercepts lists a session's intercepts, or every intercept when session_id is empty,
// sorted by namespace and name.
func (m *Manager) ListIntercepts(_ context.Context, req *managerv1.ListInterceptsRequest) (*managerv1.ListInterceptsResponse, error) {
	var s *session
	if req.GetSessionId() != "" {
		var err error
		if s, err = m.clientSession(req.GetSessionId()); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	var out []*managerv1.InterceptInfo
	for _, ic := range m.intercepts {
		if s == nil || ic.session == s {
			out = append(out, ic.info())
		}
	}
	m.mu.Unlock()
	sortIntercepts(out)
	return &managerv1.ListInterceptsResponse{Intercepts: out}, nil
}

func sortIntercepts(ics []*managerv1.InterceptInfo) {
	slices.SortFunc(ics, func(a, b *managerv1.InterceptInfo) int {
		return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()),
			strings.Compare(a.GetId(), b.GetId()))
	})
}

// interceptByID returns a copy of the intercept, taken under the lock, for reading.
func (m *Manager) interceptByID(id string) (intercept, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ic, ok := m.intercepts[id]
	if !ok {
		return intercept{}, false
	}
	return *ic, true
}
