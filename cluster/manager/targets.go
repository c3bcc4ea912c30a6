package manager

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"teledock.dev/teledock/agent/agentconfig"
)

// chooseTarget picks the one target of a workload's agent config that an intercept covers: of
// the requested service, else of the only service (the annotated service-less ports count as
// one), whose port the identifier names, else the only port, or the only TCP port. A TCP port
// wins over a UDP port of the same number. what names the workload in messages.
func chooseTarget(cfg agentconfig.Config, what, service, port string) (agentconfig.Target, error) {
	groups := serviceGroups(cfg.Targets)
	switch {
	case service != "":
		if _, ok := groups[service]; !ok {
			return agentconfig.Target{}, fmt.Errorf("service %q: %w among the services that select %s (%s)",
				service, errNoPort, what, describeServices(groups))
		}
		groups = map[string][]agentconfig.Target{service: groups[service]}
	case len(groups) > 1 && port != "":
		// Only services with a port of that identifier compete.
		for name, ts := range groups {
			if !slices.ContainsFunc(ts, func(t agentconfig.Target) bool { return t.MatchesPort(port) }) {
				delete(groups, name)
			}
		}
	}
	if len(groups) > 1 {
		return agentconfig.Target{}, fmt.Errorf("%w: %s is selected by several services (%s); say which with --service",
			errAmbiguous, what, describeServices(groups))
	}
	var all, cands []agentconfig.Target
	for _, ts := range groups {
		all = ts
	}
	for _, t := range all {
		if t.MatchesPort(port) {
			cands = append(cands, t)
		}
	}
	if len(cands) == 0 {
		return agentconfig.Target{}, fmt.Errorf("port identifier %q: %w: %s has ports %s", port, errNoPort,
			groupName(all), describePorts(all))
	}
	if !slices.ContainsFunc(cands, func(t agentconfig.Target) bool { return portNumber(t) != portNumber(cands[0]) }) {
		// One port number with TCP and UDP (DNS's 53): the TCP one, as mechanism tcp says.
		if i := slices.IndexFunc(cands, func(t agentconfig.Target) bool { return t.Protocol == agentconfig.TCP }); i >= 0 {
			return cands[i], nil
		}
	}
	if port == "" {
		// Without an identifier, the one TCP port of a service that also has UDP ports: the
		// mechanism is tcp, and UDP is intercepted only when asked for by name.
		tcp := slices.DeleteFunc(slices.Clone(cands), func(t agentconfig.Target) bool { return t.Protocol != agentconfig.TCP })
		if len(distinctPorts(tcp)) == 1 {
			return tcp[0], nil
		}
	}
	if len(distinctPorts(cands)) > 1 {
		return agentconfig.Target{}, fmt.Errorf("%w: %s has several ports (%s); say which with --port LOCAL:ID",
			errAmbiguous, groupName(cands), describePorts(cands))
	}
	return cands[0], nil
}

// portNumber is the number clients connect to: the service port, or the container port of a
// service-less target.
func portNumber(t agentconfig.Target) uint16 {
	if t.Serviceless() {
		return t.ContainerPort
	}
	return t.ServicePort
}

// serviceGroups groups targets by service name; "" holds the annotated service-less ports.
func serviceGroups(ts []agentconfig.Target) map[string][]agentconfig.Target {
	out := make(map[string][]agentconfig.Target)
	for _, t := range ts {
		out[t.ServiceName] = append(out[t.ServiceName], t)
	}
	return out
}

func describeServices(groups map[string][]agentconfig.Target) string {
	var names []string
	for name := range groups {
		if name == "" {
			names = append(names, "the service-less ports of its inject-container-ports annotation")
		} else {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func groupName(ts []agentconfig.Target) string {
	if len(ts) == 0 || ts[0].Serviceless() {
		return "the workload's annotated container ports"
	}
	return "service " + ts[0].ServiceName
}

// portID is how the intercept names its port: the service port's name or number, or for a
// service-less target the container port's.
func portID(t agentconfig.Target) string {
	if t.Serviceless() {
		if t.ContainerPortName != "" {
			return t.ContainerPortName
		}
		return strconv.Itoa(int(t.ContainerPort))
	}
	if t.ServicePortName != "" {
		return t.ServicePortName
	}
	return strconv.Itoa(int(t.ServicePort))
}

// portLabel describes a target's port for messages: "http (80/TCP)".
func portLabel(t agentconfig.Target) string {
	number := portNumber(t)
	id := portID(t)
	if id == strconv.Itoa(int(number)) {
		return fmt.Sprintf("%d/%s", number, t.Protocol)
	}
	return fmt.Sprintf("%s (%d/%s)", id, number, t.Protocol)
}

func describePorts(ts []agentconfig.Target) string { return strings.Join(distinctPorts(ts), ", ") }

// distinctPorts labels the ports of the targets, each once.
func distinctPorts(ts []agentconfig.Target) []string {
	var out []string
	for _, t := range ts {
		if l := portLabel(t); !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

// sameBackend reports whether two targets lead to the same app port, which is what an agent
// port serves and an intercept takes over.
func sameBackend(a, b agentconfig.Target) bool {
	return a.ContainerName == b.ContainerName && a.ContainerPort == b.ContainerPort && a.Protocol == b.Protocol
}
