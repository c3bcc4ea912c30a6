package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"teledock.dev/teledock/agent/agentconfig"
)

// Names of what the injector adds to a pod.
const (
	AgentContainerName = "traffic-agent"
	InitContainerName  = "teledock-init"
	// AgentBinary is the traffic-agent's path in the agent image (a FROM scratch image).
	AgentBinary = "/traffic-agent"
	// AgentUID is the user the agent runs as. It is set on the container rather than left to
	// the image so that runAsNonRoot can be verified by the kubelet whatever the image says.
	AgentUID int64 = 7777
	// TokenVolume is the projected ServiceAccount token the agent shows the manager.
	TokenVolume = "teledock-agent-token"
	// tokenLifetime is how long a projected token is valid; the kubelet renews it at 80 %.
	tokenLifetime int64 = 3600
)

// ErrPodMismatch means the pod lacks a container or port that the config names: the pod
// template changed after the config was planned, and the config must be planned again.
var ErrPodMismatch = errors.New("pod does not match the agent config")

// JSONPatchOp is one RFC 6902 operation, the form of an admission webhook's patch.
type JSONPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// HasAgent reports whether the pod already has a traffic-agent.
func HasAgent(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == AgentContainerName })
}

// Mutate returns the patch that gives the pod its traffic-agent according to cfg:
//   - the agent container, listening on the agent ports; for a ModeRename target its port takes
//     the name of the app's port,
//   - the app's port renamed for ModeRename targets (and the probes and lifecycle hooks that
//     refer to it by name, so that they keep checking the app),
//   - the init container that installs the nftables redirect, only when a target needs it,
//   - the sleeping placeholder in place of each container that cfg.Replace names.
//
// A pod that already has an agent gets no patch, so that a pod admitted twice (a re-invoked
// webhook, a retried request) is patched once.
func Mutate(pod *corev1.Pod, cfg AgentConfig) ([]JSONPatchOp, error) {
	if HasAgent(pod) {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pod.Spec.HostNetwork {
		return nil, ErrHostNetwork
	}
	index := make(map[string]int, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		index[c.Name] = i
	}
	for _, t := range cfg.Targets {
		if _, ok := index[t.ContainerName]; !ok {
			return nil, fmt.Errorf("%w: no container %q", ErrPodMismatch, t.ContainerName)
		}
	}

	var ops []JSONPatchOp
	renameOps, err := renameOps(pod, cfg, index)
	if err != nil {
		return nil, err
	}
	ops = append(ops, renameOps...)
	for _, name := range cfg.Replace {
		i, ok := index[name]
		if !ok {
			return nil, fmt.Errorf("%w: no container %q to replace", ErrPodMismatch, name)
		}
		ops = append(ops, replaceOps(i, pod.Spec.Containers[i], cfg)...)
	}

	agent, err := agentContainer(cfg)
	if err != nil {
		return nil, err
	}
	if err := addAppMounts(&agent, pod, cfg); err != nil {
		return nil, err
	}
	ops = append(ops, JSONPatchOp{Op: "add", Path: "/spec/containers/-", Value: agent})
	if len(pod.Spec.Volumes) == 0 {
		// The field is omitted when empty, so the array itself must be added.
		ops = append(ops, JSONPatchOp{Op: "add", Path: "/spec/volumes", Value: []corev1.Volume{tokenVolume()}})
	} else {
		ops = append(ops, JSONPatchOp{Op: "add", Path: "/spec/volumes/-", Value: tokenVolume()})
	}

	if needsRedirect(cfg) {
		init, err := initContainer(cfg)
		if err != nil {
			return nil, err
		}
		if len(pod.Spec.InitContainers) == 0 {
			// The field is omitted when empty, so the array itself must be added.
			ops = append(ops, JSONPatchOp{Op: "add", Path: "/spec/initContainers", Value: []corev1.Container{init}})
		} else {
			ops = append(ops, JSONPatchOp{Op: "add", Path: "/spec/initContainers/-", Value: init})
		}
	}
	return ops, nil
}

func needsRedirect(cfg AgentConfig) bool {
	return slices.ContainsFunc(cfg.Targets, func(t agentconfig.Target) bool { return t.Mode == agentconfig.ModeRedirect })
}

// renameOps renames the app's ports that the agent takes over by name. Every operation on a
// container is preceded by a test of its name, so that a patch computed for one pod can never
// edit the wrong container of another.
func renameOps(pod *corev1.Pod, cfg AgentConfig, index map[string]int) ([]JSONPatchOp, error) {
	var ops []JSONPatchOp
	done := make(map[[2]string]bool)
	for _, t := range cfg.Targets {
		key := [2]string{t.ContainerName, t.ContainerPortName}
		if t.Mode != agentconfig.ModeRename || done[key] {
			continue
		}
		done[key] = true
		i := index[t.ContainerName]
		c := pod.Spec.Containers[i]
		j := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == t.ContainerPortName })
		if j < 0 {
			return nil, fmt.Errorf("%w: container %q has no port named %q", ErrPodMismatch, c.Name, t.ContainerPortName)
		}
		base := fmt.Sprintf("/spec/containers/%d", i)
		ops = append(ops,
			JSONPatchOp{Op: "test", Path: base + "/name", Value: c.Name},
			JSONPatchOp{Op: "replace", Path: fmt.Sprintf("%s/ports/%d/name", base, j), Value: t.RenamedPortName},
		)
		ops = append(ops, renamePortRefs(base, c, t.ContainerPortName, t.RenamedPortName)...)
	}
	return ops, nil
}

// renamePortRefs rewrites the probes and lifecycle hooks that name the port: the kubelet
// resolves a named port within the container, so without this they would lose their port.
func renamePortRefs(base string, c corev1.Container, from, to string) []JSONPatchOp {
	var ops []JSONPatchOp
	handler := func(path string, httpGet *corev1.HTTPGetAction, tcp *corev1.TCPSocketAction) {
		if httpGet != nil && namesPort(httpGet.Port, from) {
			ops = append(ops, JSONPatchOp{Op: "replace", Path: path + "/httpGet/port", Value: to})
		}
		if tcp != nil && namesPort(tcp.Port, from) {
			ops = append(ops, JSONPatchOp{Op: "replace", Path: path + "/tcpSocket/port", Value: to})
		}
	}
	for _, p := range []struct {
		field string
		probe *corev1.Probe
	}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
		if p.probe != nil {
			handler(base+"/"+p.field, p.probe.HTTPGet, p.probe.TCPSocket)
		}
	}
	if l := c.Lifecycle; l != nil {
		if l.PostStart != nil {
			handler(base+"/lifecycle/postStart", l.PostStart.HTTPGet, l.PostStart.TCPSocket)
		}
		if l.PreStop != nil {
			handler(base+"/lifecycle/preStop", l.PreStop.HTTPGet, l.PreStop.TCPSocket)
		}
	}
	return ops
}

func namesPort(p intstr.IntOrString, name string) bool {
	return p.Type == intstr.String && p.StrVal == name
}

// replaceOps swaps a container's program for the agent's sleeping placeholder (intercept
// --replace). Its probes and hooks go too: they would fail against a sleeper, and a failing
// readiness probe would take the pod out of the very endpoints the intercept serves. Ports, env
// and mounts stay, so that the pod keeps its shape and its named ports.
func replaceOps(i int, c corev1.Container, cfg AgentConfig) []JSONPatchOp {
	base := fmt.Sprintf("/spec/containers/%d", i)
	ops := []JSONPatchOp{
		{Op: "test", Path: base + "/name", Value: c.Name},
		{Op: "add", Path: base + "/image", Value: cfg.AgentImage},
		{Op: "add", Path: base + "/command", Value: []string{AgentBinary}},
		{Op: "add", Path: base + "/args", Value: []string{"sleep"}},
	}
	for _, f := range []struct {
		field   string
		present bool
	}{
		{"livenessProbe", c.LivenessProbe != nil},
		{"readinessProbe", c.ReadinessProbe != nil},
		{"startupProbe", c.StartupProbe != nil},
		{"lifecycle", c.Lifecycle != nil},
	} {
		if f.present {
			ops = append(ops, JSONPatchOp{Op: "remove", Path: base + "/" + f.field})
		}
	}
	return ops
}

// tokenVolume projects a ServiceAccount token bound to the pod, for the manager's audience only: the
// agent's proof of which pod it runs in (see agentconfig.TokenFile). It is readable by the agent's
// user whatever users the pod's other containers run as; only the agent mounts it.
func tokenVolume() corev1.Volume {
	return corev1.Volume{
		Name: TokenVolume,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr(int32(0o444)),
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          agentconfig.TokenAudience,
				ExpirationSeconds: ptr(tokenLifetime),
				Path:              "token",
			}}},
		}},
	}
}

// agentContainer is the traffic-agent sidecar. It meets the "restricted" Pod Security Standard,
// so that rename-mode intercepts work in namespaces that enforce it.
func agentContainer(cfg AgentConfig) (corev1.Container, error) {
	env, err := agentEnv(cfg)
	if err != nil {
		return corev1.Container{}, err
	}
	env = append(env,
		fieldEnv(agentconfig.EnvPodIP, "status.podIP"),
		fieldEnv(agentconfig.EnvPodName, "metadata.name"),
		fieldEnv(agentconfig.EnvNamespace, "metadata.namespace"),
	)
	return corev1.Container{
		Name:    AgentContainerName,
		Image:   cfg.AgentImage,
		Command: []string{AgentBinary},
		Args:    []string{"run"},
		Ports:   agentPorts(cfg),
		Env:     env,
		VolumeMounts: []corev1.VolumeMount{{
			Name: TokenVolume, MountPath: agentconfig.TokenDir, ReadOnly: true,
		}},
		// Ready once the agent listens on its ports; until then the pod stays out of the endpoints
		// that the agent's ports now serve.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: agentconfig.ReadyPath,
				Port: intstr.FromInt32(int32(cfg.EffectiveHealthPort())),
			}},
			PeriodSeconds: 5,
		},
		Resources: corev1.ResourceRequirements{
			// No CPU limit: throttling a proxy shows up as latency for every request it carries.
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(AgentUID),
			RunAsNonRoot:             ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}, nil
}

// initContainer installs the nftables redirect and exits.
//
// It runs as uid 0 with NET_ADMIN added and everything else dropped. Root is required, not just
// the capability: the runtime puts added capabilities in the effective set only for uid 0, since
// Kubernetes sets no ambient capabilities, and allowPrivilegeEscalation=false (no_new_privs)
// also rules out file capabilities on the binary. nf_tables then checks CAP_NET_ADMIN in the
// user namespace that owns the pod's network namespace, which a user-namespaced pod
// (hostUsers: false) satisfies as well. runAsNonRoot is set to false explicitly because a
// pod-level runAsNonRoot: true would otherwise refuse uid 0. NET_ADMIN is outside the
// "baseline" Pod Security Standard, so redirect mode cannot work where baseline or restricted
// is enforced; rename mode can.
func initContainer(cfg AgentConfig) (corev1.Container, error) {
	env, err := agentEnv(cfg)
	if err != nil {
		return corev1.Container{}, err
	}
	return corev1.Container{
		Name:    InitContainerName,
		Image:   cfg.AgentImage,
		Command: []string{AgentBinary},
		Args:    []string{"redirect"},
		Env:     env,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}, nil
}

// addAppMounts gives the agent the intercepted containers' volume mounts, under
// agentconfig.MountsDir, read-only where the app has them read-only, and tells it which they are:
// it serves them to the intercepting developer. The pod admitted here already has the
// ServiceAccount token's mount (that admission plugin runs before webhooks), so it is among them.
func addAppMounts(agent *corev1.Container, pod *corev1.Pod, cfg AgentConfig) error {
	var mounts []agentconfig.Mount
	var seen []string
	for _, t := range cfg.Targets {
		if slices.Contains(seen, t.ContainerName) {
			continue
		}
		seen = append(seen, t.ContainerName)
		i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == t.ContainerName })
		for _, vm := range pod.Spec.Containers[i].VolumeMounts {
			m := agentconfig.Mount{Container: t.ContainerName, Path: path.Clean(vm.MountPath), ReadOnly: vm.ReadOnly}
			if m.Path == "/" || !path.IsAbs(m.Path) {
				continue
			}
			mounts = append(mounts, m)
			agent.VolumeMounts = append(agent.VolumeMounts, corev1.VolumeMount{
				Name: vm.Name, MountPath: m.AgentPath(), ReadOnly: vm.ReadOnly, SubPath: vm.SubPath, SubPathExpr: vm.SubPathExpr,
			})
		}
	}
	if len(mounts) == 0 {
		return nil
	}
	js, err := json.Marshal(mounts)
	if err != nil {
		return fmt.Errorf("agent mounts: %w", err)
	}
	agent.Env = append(agent.Env, corev1.EnvVar{Name: agentconfig.EnvMounts, Value: string(js)})
	return nil
}

// agentEnv carries the config in the pod spec itself rather than in a mounted ConfigMap: the pod
// keeps the config it was admitted with even when the ConfigMap changes before a rollout.
func agentEnv(cfg AgentConfig) ([]corev1.EnvVar, error) {
	js, err := cfg.JSON()
	if err != nil {
		return nil, err
	}
	return []corev1.EnvVar{{Name: agentconfig.EnvConfig, Value: string(js)}}, nil
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
	}}
}

// agentPorts declares one port per agent port. An agent port in front of a renamed app port
// takes the app port's old name, which is what moves the service's endpoints to the agent.
func agentPorts(cfg AgentConfig) []corev1.ContainerPort {
	var ports []corev1.ContainerPort
	seen := make(map[uint16]int)
	for _, t := range cfg.Targets {
		i, ok := seen[t.AgentPort]
		if !ok {
			i = len(ports)
			seen[t.AgentPort] = i
			ports = append(ports, corev1.ContainerPort{ContainerPort: int32(t.AgentPort), Protocol: corev1.Protocol(t.Protocol)})
		}
		if t.Mode == agentconfig.ModeRename {
			ports[i].Name = t.ContainerPortName
		}
	}
	return ports
}

func ptr[T any](v T) *T { return &v }
