package inject

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"teledock.dev/teledock/agent/agentconfig"
)

// AgentConfig is the configuration that Plan makes and Mutate injects.
type AgentConfig = agentconfig.Config

// DefaultFirstAgentPort is where agent ports start unless Settings say otherwise.
const DefaultFirstAgentPort = 9900

// renamePrefix marks an app container port that the agent took the name of.
const renamePrefix = "tm"

// maxPortNameLen is the longest container port name: an IANA service name.
const maxPortNameLen = 15

var (
	// ErrNoTargets means a workload has nothing the agent could intercept.
	ErrNoTargets = errors.New("nothing to intercept")
	// ErrPortNotFound means a service port or an annotation names a container port that the pod
	// template does not have.
	ErrPortNotFound = errors.New("container port not found")
	// ErrHostNetwork refuses pods in the node's network namespace: a redirect there would
	// capture the node's traffic.
	ErrHostNetwork = errors.New("pods on the host network cannot get a traffic-agent")
	// ErrUnsupportedWorkload is returned for objects that are not Deployments, ReplicaSets,
	// StatefulSets or DaemonSets.
	ErrUnsupportedWorkload = errors.New("unsupported workload")
	// ErrSettings means the injector itself is misconfigured.
	ErrSettings = errors.New("invalid injector settings")
)

// Workload is what Plan needs of a Deployment, ReplicaSet, StatefulSet or DaemonSet.
type Workload struct {
	Kind      string
	Name      string
	Namespace string
	Template  corev1.PodTemplateSpec
}

func (w Workload) String() string { return fmt.Sprintf("%s %s/%s", w.Kind, w.Namespace, w.Name) }

// WorkloadOf extracts the Workload of an apps/v1 Deployment, ReplicaSet, StatefulSet or
// DaemonSet.
func WorkloadOf(obj runtime.Object) (Workload, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return Workload{"Deployment", o.Name, o.Namespace, o.Spec.Template}, nil
	case *appsv1.ReplicaSet:
		return Workload{"ReplicaSet", o.Name, o.Namespace, o.Spec.Template}, nil
	case *appsv1.StatefulSet:
		return Workload{"StatefulSet", o.Name, o.Namespace, o.Spec.Template}, nil
	case *appsv1.DaemonSet:
		return Workload{"DaemonSet", o.Name, o.Namespace, o.Spec.Template}, nil
	}
	return Workload{}, fmt.Errorf("%w: %T", ErrUnsupportedWorkload, obj)
}

// Settings are the injector's own parameters.
type Settings struct {
	AgentImage     string
	ManagerAddress string // host:port the agents dial
	FirstAgentPort uint16 // 0 means DefaultFirstAgentPort
}

func (s Settings) validate() error {
	if s.AgentImage == "" {
		return fmt.Errorf("%w: no agent image", ErrSettings)
	}
	if _, _, err := net.SplitHostPort(s.ManagerAddress); err != nil {
		return fmt.Errorf("%w: manager address %q: %w", ErrSettings, s.ManagerAddress, err)
	}
	return nil
}

// Plan maps the ports of the services that select the workload's pods, and the container ports
// its inject-container-ports annotation names, to container ports and agent ports.
//
// services may hold every service of the namespace; Plan keeps those whose selector matches the
// pod template's labels. A service port that maps to no container port of this workload is left
// out, as the endpoints controller leaves the pod out of it (a service may select several
// workloads that serve different ports); Plan fails only when no port at all can be intercepted.
// An annotation item that names a missing port is an error: somebody asked for exactly that port.
func Plan(w Workload, services []corev1.Service, s Settings) (AgentConfig, error) {
	if err := s.validate(); err != nil {
		return AgentConfig{}, err
	}
	if w.Template.Spec.HostNetwork {
		return AgentConfig{}, fmt.Errorf("%s: %w", w, ErrHostNetwork)
	}
	refs, err := InjectPorts(w.Template.Annotations)
	if err != nil {
		return AgentConfig{}, fmt.Errorf("%s: %w", w, err)
	}
	containers := appContainers(w.Template.Spec.Containers)
	selecting := selectingServices(w, services)
	if len(selecting) == 0 && len(refs) == 0 {
		return AgentConfig{}, fmt.Errorf("%w: %s: no service selects its pods (labels %q) and its pod template has no %s annotation",
			ErrNoTargets, w, labels.FormatLabels(w.Template.Labels), AnnotationInjectPorts)
	}

	var targets []agentconfig.Target
	var skipped []string
	for _, svc := range selecting {
		for _, sp := range svc.Spec.Ports {
			t, err := serviceTarget(svc, sp, containers)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("service %s port %s: %v", svc.Name, servicePortLabel(sp), err))
				continue
			}
			targets = append(targets, t)
		}
	}
	for _, ref := range refs {
		t, err := annotatedTarget(ref, containers)
		if err != nil {
			return AgentConfig{}, fmt.Errorf("%s: annotation %s: %w", w, injectPortsAnnotation(w.Template.Annotations), err)
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		names := make([]string, len(selecting))
		for i, svc := range selecting {
			names[i] = svc.Name
		}
		return AgentConfig{}, fmt.Errorf("%w: %s: no port of the services that select it (%s) maps to a container port: %s",
			ErrNoTargets, w, strings.Join(names, ", "), strings.Join(skipped, "; "))
	}

	first := s.FirstAgentPort
	if first == 0 {
		first = DefaultFirstAgentPort
	}
	if err := allocateAgentPorts(targets, w.Template.Spec, first); err != nil {
		return AgentConfig{}, fmt.Errorf("%s: %w", w, err)
	}
	renamePorts(targets, w.Template.Spec)

	cfg := AgentConfig{
		Version:        agentconfig.SchemaVersion,
		Namespace:      w.Namespace,
		WorkloadKind:   w.Kind,
		WorkloadName:   w.Name,
		AgentImage:     s.AgentImage,
		ManagerAddress: s.ManagerAddress,
		Targets:        targets,
	}
	if err := cfg.Validate(); err != nil {
		// Plan's own output failing validation is a bug here, not the user's problem.
		return AgentConfig{}, fmt.Errorf("%s: planned an invalid config: %w", w, err)
	}
	return cfg, nil
}

// selectingServices returns the services of the workload's namespace whose selector matches its
// pod template, sorted by name. A service without a selector selects nothing (its endpoints are
// managed by hand), and ExternalName services have no endpoints.
func selectingServices(w Workload, services []corev1.Service) []corev1.Service {
	podLabels := labels.Set(w.Template.Labels)
	var out []corev1.Service
	for _, svc := range services {
		if svc.Namespace != "" && svc.Namespace != w.Namespace {
			continue
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			out = append(out, svc)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func serviceTarget(svc corev1.Service, sp corev1.ServicePort, containers []corev1.Container) (agentconfig.Target, error) {
	proto, err := protocolOf(sp.Protocol)
	if err != nil {
		return agentconfig.Target{}, err
	}
	t := agentconfig.Target{
		ServiceName:     svc.Name,
		ServiceUID:      string(svc.UID),
		ServicePortName: sp.Name,
		ServicePort:     uint16(sp.Port),
		Protocol:        proto,
	}
	// Clients of a headless service connect to podIP:port themselves, so only a redirect of the
	// app's port catches them, whatever the targetPort looks like.
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone

	if sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "" {
		t.TargetPort = sp.TargetPort.StrVal
		c, p, ok := portByName(containers, sp.TargetPort.StrVal, proto)
		if !ok {
			return t, fmt.Errorf("%w: no container has a %s port named %q", ErrPortNotFound, proto, sp.TargetPort.StrVal)
		}
		t.ContainerName, t.ContainerPortName, t.ContainerPort = c, p.Name, uint16(p.ContainerPort)
		t.Mode = agentconfig.ModeRename
		if headless {
			t.Mode = agentconfig.ModeRedirect
		}
		return t, nil
	}

	number := sp.TargetPort.IntValue()
	if number == 0 { // the API server defaults targetPort to port; objects built by hand may not
		number = int(sp.Port)
	}
	t.TargetPort = strconv.Itoa(number)
	c, p, err := portByNumberOrOnlyContainer(containers, uint16(number), proto)
	if err != nil {
		return t, err
	}
	t.ContainerName, t.ContainerPortName, t.ContainerPort = c, p.Name, uint16(p.ContainerPort)
	t.Mode = agentconfig.ModeRedirect
	return t, nil
}

// annotatedTarget maps an annotation item to a container port. Clients of a service-less port
// connect to podIP:port, so it is always redirected.
func annotatedTarget(ref PortRef, containers []corev1.Container) (agentconfig.Target, error) {
	var (
		c   string
		p   corev1.ContainerPort
		err error
	)
	if ref.Name != "" {
		var ok bool
		if c, p, ok = portByName(containers, ref.Name, ref.Protocol); !ok {
			what := "port"
			if ref.Protocol != "" {
				what = string(ref.Protocol) + " port"
			}
			return agentconfig.Target{}, fmt.Errorf("%w: no container has a %s named %q", ErrPortNotFound, what, ref.Name)
		}
	} else if c, p, err = portByNumberOrOnlyContainer(containers, ref.Number, ref.Protocol); err != nil {
		return agentconfig.Target{}, err
	}
	proto, err := protocolOf(p.Protocol)
	if err != nil {
		return agentconfig.Target{}, fmt.Errorf("port %s: %w", ref, err)
	}
	return agentconfig.Target{
		Protocol:          proto,
		ContainerName:     c,
		ContainerPortName: p.Name,
		ContainerPort:     uint16(p.ContainerPort),
		Mode:              agentconfig.ModeRedirect,
	}, nil
}

// protocolOf applies the API's default (TCP) and refuses what the agent cannot carry.
func protocolOf(p corev1.Protocol) (agentconfig.Protocol, error) {
	switch p {
	case "", corev1.ProtocolTCP:
		return agentconfig.TCP, nil
	case corev1.ProtocolUDP:
		return agentconfig.UDP, nil
	}
	return "", fmt.Errorf("protocol %s is not supported", p)
}

func portProtocol(p corev1.ContainerPort) agentconfig.Protocol {
	proto, _ := protocolOf(p.Protocol)
	return proto
}

// appContainers leaves out an agent that a template may already carry.
func appContainers(cs []corev1.Container) []corev1.Container {
	return slices.DeleteFunc(slices.Clone(cs), func(c corev1.Container) bool { return c.Name == AgentContainerName })
}

// portByName finds the first container port with the name, in container order as the endpoints
// controller does. An empty proto matches any protocol.
func portByName(cs []corev1.Container, name string, proto agentconfig.Protocol) (string, corev1.ContainerPort, bool) {
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.Name == name && (proto == "" || portProtocol(p) == proto) {
				return c.Name, p, true
			}
		}
	}
	return "", corev1.ContainerPort{}, false
}

// portByNumberOrOnlyContainer finds the container that declares the port. Declaring container
// ports is optional, so when nobody declares it and the pod has a single container, that one
// must be serving it. An empty proto prefers TCP and takes UDP when only UDP is declared.
func portByNumberOrOnlyContainer(cs []corev1.Container, number uint16, proto agentconfig.Protocol) (string, corev1.ContainerPort, error) {
	protos := []agentconfig.Protocol{proto}
	if proto == "" {
		protos = []agentconfig.Protocol{agentconfig.TCP, agentconfig.UDP}
	}
	for _, want := range protos {
		for _, c := range cs {
			for _, p := range c.Ports {
				if uint16(p.ContainerPort) == number && portProtocol(p) == want {
					return c.Name, p, nil
				}
			}
		}
	}
	if proto == "" {
		proto = agentconfig.TCP
	}
	if len(cs) == 1 {
		return cs[0].Name, corev1.ContainerPort{ContainerPort: int32(number), Protocol: corev1.Protocol(proto)}, nil
	}
	return "", corev1.ContainerPort{}, fmt.Errorf("%w: no container declares port %d/%s, and with %d containers the one serving it is unknown; declare it in that container's ports",
		ErrPortNotFound, number, proto, len(cs))
}

// allocateAgentPorts gives every distinct container port (per container and protocol) an agent
// port, counting up from first and skipping the ports the pod's containers declare.
func allocateAgentPorts(targets []agentconfig.Target, spec corev1.PodSpec, first uint16) error {
	used := make(map[int]bool)
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				used[int(p.ContainerPort)] = true
			}
		}
	}
	type backend struct {
		container string
		port      uint16
		proto     agentconfig.Protocol
	}
	assigned := make(map[backend]uint16)
	next := int(first)
	for i := range targets {
		t := &targets[i]
		b := backend{t.ContainerName, t.ContainerPort, t.Protocol}
		if p, ok := assigned[b]; ok {
			t.AgentPort = p
			continue
		}
		for used[next] {
			next++
		}
		if next > 65535 {
			return fmt.Errorf("no free agent port from %d up", first)
		}
		used[next] = true
		assigned[b] = uint16(next)
		t.AgentPort = uint16(next)
	}
	return nil
}

// renamePorts picks the new name of every app port that the agent takes over by name: "tm-" and
// the old name, cut to the 15 characters a port name may have, and unique in the pod.
func renamePorts(targets []agentconfig.Target, spec corev1.PodSpec) {
	taken := make(map[string]bool)
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			taken[p.Name] = true
		}
	}
	type port struct{ container, name string }
	renamed := make(map[port]string)
	for i := range targets {
		t := &targets[i]
		if t.Mode != agentconfig.ModeRename {
			continue
		}
		key := port{t.ContainerName, t.ContainerPortName}
		if n, ok := renamed[key]; ok {
			t.RenamedPortName = n
			continue
		}
		for n := 0; ; n++ {
			prefix := renamePrefix
			if n > 0 {
				prefix += strconv.Itoa(n)
			}
			cand := strings.TrimRight(truncate(prefix+"-"+t.ContainerPortName, maxPortNameLen), "-")
			if !taken[cand] && len(validation.IsValidPortName(cand)) == 0 {
				taken[cand] = true
				renamed[key] = cand
				t.RenamedPortName = cand
				break
			}
		}
	}
}

func servicePortLabel(sp corev1.ServicePort) string {
	if sp.Name != "" {
		return fmt.Sprintf("%s (%d)", sp.Name, sp.Port)
	}
	return strconv.Itoa(int(sp.Port))
}

// injectPortsAnnotation names the spelling of the annotation that the template uses.
func injectPortsAnnotation(annotations map[string]string) string {
	if _, ok := annotations[AnnotationInjectPorts]; ok {
		return AnnotationInjectPorts
	}
	return LegacyAnnotationInjectPorts
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
