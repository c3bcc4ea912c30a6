package manager

import (
	"context"
	"fmt"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
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
