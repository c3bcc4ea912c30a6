package manager

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/workload"
	"teledock.dev/teledock/internal/httpfilter"
)

// Personal intercepts (HTTP filters) and wiretaps. Several intercepts of one app port coexist
// when the agent can tell, request by request, which of them a request is for: each filtered
// intercept takes the requests its filter selects and the app answers the rest, so two of them
// may share a port only when no request can match both. A wiretap takes nothing away from the
// app or from another intercept (it gets copies), so it never conflicts. An intercept of whole
// connections takes every request and shares its port with wiretaps only.

// filtered reports whether the intercept takes only the requests its HTTP filter selects.
func (ic *intercept) filtered() bool { return httpfilter.Selects(ic.filter) }

// perRequest reports whether the agent routes the intercept's port request by request.
func (ic *intercept) perRequest() bool { return ic.wiretap || ic.filtered() }

// conflictWith reports whether an existing intercept x of a port refuses a new intercept of the
// same port with filter f (nil: whole connections) and wiretap w, and what to add to the message
// that says x has the port.
func conflictWith(x *intercept, f *managerv1.HttpFilter, w bool) (bool, string) {
	switch {
	case w || x.wiretap:
		return false, ""
	case !x.filtered():
		return true, "" // the port is intercepted, whole: that says it all
	case !httpfilter.Selects(f):
		return true, fmt.Sprintf(", HTTP filter %s; an intercept without --http-header or --http-path filters would take its requests",
			describeFilter(x.filter))
	case httpfilter.FromProto(x.filter).Overlaps(httpfilter.FromProto(f)):
		return true, fmt.Sprintf(", HTTP filter %s, which a request could match together with yours (%s); choose a filter no request can match both of, such as another --http-header value",
			describeFilter(x.filter), describeFilter(f))
	}
	return false, ""
}

func describeFilter(f *managerv1.HttpFilter) string {
	if !httpfilter.Selects(f) {
		return ""
	}
	return httpfilter.FromProto(f).String()
}

// validateFilter checks a request's filter and wiretap, naming the flag that is wrong. Which
// target the intercept gets is not known yet; checkFilterTarget follows.
func validateFilter(req *managerv1.CreateInterceptRequest) error {
	f, w := req.GetHttpFilter(), req.GetWiretap()
	if req.GetReplace() && (w || httpfilter.Selects(f)) {
		return fmt.Errorf("%w: --replace cannot be combined with HTTP filters or --wiretap: it stops the app, which must answer the requests the intercept does not take", errInvalid)
	}
	if err := httpfilter.Validate(f); err != nil {
		return fmt.Errorf("%w: %w", errInvalid, err)
	}
	return nil
}

// checkFilterTarget refuses filters and wiretaps for a port that does not carry HTTP.
func checkFilterTarget(req *managerv1.CreateInterceptRequest, t agentconfig.Target) error {
	if t.Protocol == agentconfig.TCP || !req.GetWiretap() && !httpfilter.Selects(req.GetHttpFilter()) {
		return nil
	}
	return fmt.Errorf("%w: HTTP filters and --wiretap apply to TCP ports only, and port %s is %s", errInvalid, portLabel(t), t.Protocol)
}

// Agents of an older version (a manager upgraded before its workloads' pods were restarted) do
// not route request by request: given several targets for a port, they keep the last one and
// ignore its filter, which would send the whole port to one developer. The agent declares
// AGENT_CAPABILITY_HTTP_FILTERS on arrival; the manager refuses filtered intercepts and wiretaps
// on a workload whose agents lack it (checkFilterAgents), and never sends such an agent more than
// the one target of a port that it understands (oneTargetPerPort).

// httpFilters reports whether the agent declared that it routes filtered intercepts and wiretaps.
func (a *agent) httpFilters() bool {
	return slices.Contains(a.info.GetCapabilities(), managerv1.AgentCapability_AGENT_CAPABILITY_HTTP_FILTERS)
}

// checkFilterAgents refuses a filtered intercept or wiretap when an arrived agent of the workload
// that runs its config (those that will serve it) predates HTTP filters. Agents of other configs
// are in pods that the rollout replaces, and get no per-request targets meanwhile.
func (m *Manager) checkFilterAgents(req *managerv1.CreateInterceptRequest, wl workload.Workload, cfgJSON string) error {
	if !req.GetWiretap() && !httpfilter.Selects(req.GetHttpFilter()) {
		return nil
	}
	var pods, versions []string
	for _, s := range m.agentsOf(keyOf(wl), cfgJSON) {
		if s.agent.httpFilters() {
			continue
		}
		pods = append(pods, s.agent.info.GetPodName())
		if v := s.agent.info.GetVersion(); v != "" && !slices.Contains(versions, v) {
			versions = append(versions, v)
		}
	}
	if len(pods) == 0 {
		return nil
	}
	slices.Sort(pods)
	slices.Sort(versions)
	what := "pod " + strings.Join(pods, ", ")
	if len(pods) > 1 {
		what = "pods " + strings.Join(pods, ", ")
	}
	if len(versions) > 0 {
		what += ", version " + strings.Join(versions, ", ")
	}
	return fmt.Errorf("%w: the traffic-agent of %s predates HTTP filters (%s); restart the workload to get the current agent (%s)",
		errOutdatedAgent, workloadRef(wl.Kind, wl.Name), what, restartCommand(wl, pods))
}

// workloadRef names a workload the way kubectl does, e.g. deployment/echo.
func workloadRef(kind, name string) string { return strings.ToLower(kind) + "/" + name }

// restartCommand is the kubectl command that replaces the pods of wl: a rollout restart, or, for
// a ReplicaSet (which has none), deleting the pods.
func restartCommand(wl workload.Workload, pods []string) string {
	if wl.Kind == workload.KindReplicaSet {
		return fmt.Sprintf("kubectl delete pod -n %s %s", wl.Namespace, strings.Join(pods, " "))
	}
	return fmt.Sprintf("kubectl rollout restart %s -n %s", workloadRef(wl.Kind, wl.Name), wl.Namespace)
}

// oneTargetPerPort is what an agent without the capability gets of a port's intercept targets:
// the intercept of whole connections, if there is one (its wiretaps left out), and nothing
// otherwise (the port then goes to the app): a filtered intercept it would apply to every request.
func oneTargetPerPort(ics []*managerv1.AgentTarget) []*managerv1.AgentTarget {
	return slices.DeleteFunc(ics, func(at *managerv1.AgentTarget) bool {
		return at.GetWiretap() || httpfilter.Selects(at.GetHttpFilter())
	})
}

// ReportCounters stores an agent's counters of the intercepts of its workload; those of other
// workloads' intercepts, or of intercepts that are gone, are ignored.
func (m *Manager) ReportCounters(_ context.Context, req *managerv1.AgentCounters) (*managerv1.ReportCountersResponse, error) {
	s, err := m.agentSession(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	pod := s.agent.info.GetPodName()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range req.GetIntercepts() {
		ic, ok := m.intercepts[c.GetInterceptId()]
		if !ok || ic.workload != s.agent.workload {
			continue
		}
		if ic.counters == nil {
			ic.counters = make(map[string]*managerv1.InterceptCounters)
		}
		// By pod, not by session: an agent that arrives again reports its totals again.
		ic.counters[pod] = &managerv1.InterceptCounters{
			Intercepted: c.GetCounters().GetIntercepted(),
			Copied:      c.GetCounters().GetCopied(),
			Dropped:     c.GetCounters().GetDropped(),
		}
	}
	return &managerv1.ReportCountersResponse{}, nil
}

// sumCounters adds up the agents' counters of an intercept.
func sumCounters(byPod map[string]*managerv1.InterceptCounters) *managerv1.InterceptCounters {
	sum := &managerv1.InterceptCounters{}
	for _, c := range byPod {
		sum.Intercepted += c.GetIntercepted()
		sum.Copied += c.GetCopied()
		sum.Dropped += c.GetDropped()
	}
	return sum
}

// replaceConflict refuses to stop a container whose app answers requests for an intercept of
// another port: --replace removes the app container, while a filtered intercept or a wiretap of
// the same container needs its app for the requests it does not take (or only copies), in
// whichever order the two are made. x is an intercept of the same workload.
func replaceConflict(x *intercept, req *managerv1.CreateInterceptRequest, t agentconfig.Target) error {
	if x.target.ContainerName != t.ContainerName {
		return nil
	}
	perRequest := req.GetWiretap() || httpfilter.Selects(req.GetHttpFilter())
	switch {
	case req.GetReplace() && x.perRequest():
		return fmt.Errorf("%w: --replace would stop container %s, whose app answers the requests intercept %q (%s) does not take; leave it first, or intercept without --replace",
			errConflict, t.ContainerName, x.name, describeKind(x))
	case perRequest && x.replace:
		return fmt.Errorf("%w: intercept %q replaces container %s, so no app is left to answer the requests an HTTP filter or wiretap does not take; leave it first",
			errConflict, x.name, t.ContainerName)
	}
	return nil
}

func describeKind(x *intercept) string {
	if x.wiretap {
		return "a wiretap"
	}
	return "HTTP filter " + describeFilter(x.filter)
}
