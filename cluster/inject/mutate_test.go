package inject

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"teledock.dev/teledock/agent/agentconfig"
)

// cartPod is a pod of cartWorkload with probes and hooks that refer to its ports by name.
func cartPod() *corev1.Pod {
	w := cartWorkload()
	pod := &corev1.Pod{ObjectMeta: w.Template.ObjectMeta, Spec: *w.Template.Spec.DeepCopy()}
	pod.Namespace = "shop"
	app := &pod.Spec.Containers[0]
	app.Image = "shop/cart:1"
	app.Command = []string{"/cart"}
	app.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}}
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}}
	app.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("metrics")}}}
	app.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/drain", Port: intstr.FromString("http")}}}
	return pod
}

func mustPlan(tb testing.TB, services ...corev1.Service) AgentConfig {
	tb.Helper()
	cfg, err := Plan(cartWorkload(), services, testSettings)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

func container(tb testing.TB, cs []corev1.Container, name string) corev1.Container {
	tb.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	tb.Fatalf("no container %q in %v", name, cs)
	return corev1.Container{}
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := make(map[string]corev1.EnvVar)
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func TestMutateRename(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	pod := cartPod()
	ops, err := Mutate(pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := applyPatch(t, pod, ops)

	app := container(t, got.Spec.Containers, "app")
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"app port renamed", app.Ports[0].Name, "tm-http"},
		{"other app port kept", app.Ports[1].Name, "metrics"},
		{"liveness follows the rename", app.LivenessProbe.HTTPGet.Port, intstr.FromString("tm-http")},
		{"readiness follows the rename", app.ReadinessProbe.TCPSocket.Port, intstr.FromString("tm-http")},
		{"startup probe on another port kept", app.StartupProbe.HTTPGet.Port, intstr.FromString("metrics")},
		{"preStop follows the rename", app.Lifecycle.PreStop.HTTPGet.Port, intstr.FromString("tm-http")},
		{"app image kept", app.Image, "shop/cart:1"},
		{"no init container without redirect", len(got.Spec.InitContainers), 0},
		{"agent appended", got.Spec.Containers[len(got.Spec.Containers)-1].Name, AgentContainerName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}

	agent := container(t, got.Spec.Containers, AgentContainerName)
	t.Run("agent takes the port name", func(t *testing.T) {
		want := []corev1.ContainerPort{{Name: "http", ContainerPort: 9900, Protocol: corev1.ProtocolTCP}}
		if !reflect.DeepEqual(agent.Ports, want) {
			t.Errorf("ports %v, want %v", agent.Ports, want)
		}
	})
	t.Run("agent command", func(t *testing.T) {
		if agent.Image != cfg.AgentImage || !reflect.DeepEqual(agent.Command, []string{AgentBinary}) || !reflect.DeepEqual(agent.Args, []string{"run"}) {
			t.Errorf("image %q command %v args %v", agent.Image, agent.Command, agent.Args)
		}
	})
	t.Run("agent env", func(t *testing.T) {
		env := envOf(agent)
		parsed, err := agentconfig.Parse([]byte(env[agentconfig.EnvConfig].Value))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(parsed, cfg) {
			t.Errorf("config in env %+v, want %+v", parsed, cfg)
		}
		for name, path := range map[string]string{
			agentconfig.EnvPodIP: "status.podIP", agentconfig.EnvPodName: "metadata.name", agentconfig.EnvNamespace: "metadata.namespace",
		} {
			if e := env[name]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
				t.Errorf("%s = %+v, want fieldRef %s", name, e, path)
			}
		}
	})
	t.Run("agent readiness probe", func(t *testing.T) {
		p := agent.ReadinessProbe
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != agentconfig.ReadyPath ||
			p.HTTPGet.Port != intstr.FromInt32(agentconfig.DefaultHealthPort) {
			t.Errorf("readinessProbe %+v", p)
		}
	})
	t.Run("agent is unprivileged", func(t *testing.T) {
		sc := agent.SecurityContext
		if sc == nil || !*sc.RunAsNonRoot || *sc.RunAsUser == 0 || *sc.AllowPrivilegeEscalation ||
			!reflect.DeepEqual(sc.Capabilities, &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}) ||
			sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("securityContext %+v", sc)
		}
		if agent.Resources.Requests.Memory().IsZero() || agent.Resources.Limits.Memory().IsZero() {
			t.Errorf("resources %+v", agent.Resources)
		}
	})
}

func TestMutateRedirect(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("metrics", 90, intstr.FromInt32(9090), "")))
	for _, tc := range []struct {
		name       string
		initBefore []corev1.Container
		wantInits  []string
	}{
		{name: "no init containers yet", wantInits: []string{InitContainerName}},
		{name: "after the pod's own init containers", initBefore: []corev1.Container{{Name: "migrate"}}, wantInits: []string{"migrate", InitContainerName}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := cartPod()
			pod.Spec.InitContainers = tc.initBefore
			ops, err := Mutate(pod, cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := applyPatch(t, pod, ops)
			var names []string
			for _, c := range got.Spec.InitContainers {
				names = append(names, c.Name)
			}
			if !reflect.DeepEqual(names, tc.wantInits) {
				t.Fatalf("init containers %v, want %v", names, tc.wantInits)
			}
			if !reflect.DeepEqual(got.Spec.Containers[0].Ports, cartPod().Spec.Containers[0].Ports) {
				t.Errorf("app ports changed: %v", got.Spec.Containers[0].Ports)
			}
			agent := container(t, got.Spec.Containers, AgentContainerName)
			if want := []corev1.ContainerPort{{ContainerPort: 9900, Protocol: corev1.ProtocolTCP}}; !reflect.DeepEqual(agent.Ports, want) {
				t.Errorf("agent ports %v, want %v", agent.Ports, want)
			}
			init := container(t, got.Spec.InitContainers, InitContainerName)
			if !reflect.DeepEqual(init.Args, []string{"redirect"}) || envOf(init)[agentconfig.EnvConfig].Value == "" {
				t.Errorf("init args %v env %v", init.Args, init.Env)
			}
			sc := init.SecurityContext
			wantCaps := &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}}
			if !reflect.DeepEqual(sc.Capabilities, wantCaps) || *sc.RunAsUser != 0 || *sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation {
				t.Errorf("init securityContext %+v", sc)
			}
		})
	}
}

func TestMutateReplace(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	cfg.Replace = []string{"app"}
	pod := cartPod()
	ops, err := Mutate(pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := applyPatch(t, pod, ops)
	app := container(t, got.Spec.Containers, "app")
	if app.Image != cfg.AgentImage || !reflect.DeepEqual(app.Command, []string{AgentBinary}) || !reflect.DeepEqual(app.Args, []string{"sleep"}) {
		t.Errorf("replaced container runs %q %v %v", app.Image, app.Command, app.Args)
	}
	if app.LivenessProbe != nil || app.ReadinessProbe != nil || app.StartupProbe != nil || app.Lifecycle != nil {
		t.Errorf("replaced container keeps probes or hooks: %+v", app)
	}
	if len(app.Ports) != 2 || app.Ports[0].Name != "tm-http" {
		t.Errorf("replaced container ports %v", app.Ports)
	}
	if dns := container(t, got.Spec.Containers, "dns"); dns.Image != "" || dns.Args != nil {
		t.Errorf("sidecar was replaced too: %+v", dns)
	}
}

func TestMutateIdempotent(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("metrics", 90, intstr.FromInt32(9090), "")))
	pod := cartPod()
	ops, err := Mutate(pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Mutate(applyPatch(t, pod, ops), cfg)
	if err != nil || again != nil {
		t.Errorf("second Mutate = %v, %v; want no patch", again, err)
	}
}

func TestMutateErrors(t *testing.T) {
	renameCfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	for _, tc := range []struct {
		name    string
		pod     func(*corev1.Pod)
		cfg     func(*AgentConfig)
		wantIs  error
		wantErr string
	}{
		{name: "container gone", pod: func(p *corev1.Pod) { p.Spec.Containers[0].Name = "main" },
			wantIs: ErrPodMismatch, wantErr: `pod does not match the agent config: no container "app"`},
		{name: "port renamed by its owner", pod: func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].Name = "web" },
			wantIs: ErrPodMismatch, wantErr: `pod does not match the agent config: container "app" has no port named "http"`},
		{name: "replace of a missing container", cfg: func(c *AgentConfig) { c.Replace = []string{"worker"} },
			wantIs: ErrPodMismatch, wantErr: `no container "worker" to replace`},
		{name: "host network", pod: func(p *corev1.Pod) { p.Spec.HostNetwork = true }, wantIs: ErrHostNetwork},
		{name: "invalid config", cfg: func(c *AgentConfig) { c.AgentImage = "" }, wantIs: agentconfig.ErrInvalid, wantErr: "no agent image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, cfg := cartPod(), renameCfg
			cfg.Targets = append([]agentconfig.Target(nil), cfg.Targets...)
			if tc.pod != nil {
				tc.pod(pod)
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			ops, err := Mutate(pod, cfg)
			if ops != nil {
				t.Errorf("got a patch %v", ops)
			}
			if !errors.Is(err, tc.wantIs) {
				t.Fatalf("err = %v, want %v", err, tc.wantIs)
			}
			if tc.wantErr != "" {
				assertErrContains(t, err, tc.wantErr)
			}
		})
	}
}

// A patch carries a test of the container's name before it edits the container by index, so a
// patch can never edit the wrong container.
func TestMutatePatchTestsContainerNames(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	ops, err := Mutate(cartPod(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ops[0] != (JSONPatchOp{Op: "test", Path: "/spec/containers/0/name", Value: "app"}) {
		t.Errorf("first op %+v, want a test of the container name", ops[0])
	}
}

// TestMutateAgentToken: the agent gets a ServiceAccount token bound to its pod and meant for the
// manager, its proof of which pod it is; a pod's own volumes are kept.
func TestMutateAgentToken(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	for _, withVolumes := range []bool{false, true} {
		pod := cartPod()
		if withVolumes {
			pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}
		ops, err := Mutate(pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := applyPatch(t, pod, ops)
		if withVolumes && (len(got.Spec.Volumes) != 2 || got.Spec.Volumes[0].Name != "data") {
			t.Errorf("the pod's own volumes changed: %v", got.Spec.Volumes)
		}
		v := got.Spec.Volumes[len(got.Spec.Volumes)-1]
		if v.Name != TokenVolume || v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
			t.Fatalf("token volume = %+v", v)
		}
		if tok := v.Projected.Sources[0].ServiceAccountToken; tok.Audience != agentconfig.TokenAudience || tok.Path != "token" {
			t.Errorf("token projection = %+v", tok)
		}
		agent := container(t, got.Spec.Containers, AgentContainerName)
		if len(agent.VolumeMounts) != 1 || agent.VolumeMounts[0].Name != TokenVolume ||
			agent.VolumeMounts[0].MountPath+"/token" != agentconfig.TokenFile || !agent.VolumeMounts[0].ReadOnly {
			t.Errorf("agent mounts %+v", agent.VolumeMounts)
		}
		for _, c := range got.Spec.Containers {
			if c.Name != AgentContainerName && slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == TokenVolume }) {
				t.Errorf("container %s mounts the agent's token", c.Name)
			}
		}
	}
}

// The agent gets the intercepted container's volume mounts under MountsDir, with their read-only
// flag and subPath, and their list in its environment; other containers' mounts stay theirs.
func TestMutateAppMounts(t *testing.T) {
	cfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	pod := cartPod()
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "config", MountPath: "/etc/cart/", ReadOnly: true},
		{Name: "cache", MountPath: "/var/cache/cart"},
		{Name: "config", MountPath: "/etc/one.conf", SubPath: "one.conf", ReadOnly: true},
	}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "sidecar", Image: "x",
		VolumeMounts: []corev1.VolumeMount{{Name: "other", MountPath: "/other"}}})
	ops, err := Mutate(pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	agent := container(t, applyPatch(t, pod, ops).Spec.Containers, AgentContainerName)
	want := []corev1.VolumeMount{
		{Name: TokenVolume, MountPath: agentconfig.TokenDir, ReadOnly: true},
		{Name: "config", MountPath: "/teledock/mounts/app/etc/cart", ReadOnly: true},
		{Name: "cache", MountPath: "/teledock/mounts/app/var/cache/cart"},
		{Name: "config", MountPath: "/teledock/mounts/app/etc/one.conf", SubPath: "one.conf", ReadOnly: true},
	}
	if !reflect.DeepEqual(agent.VolumeMounts, want) {
		t.Errorf("agent mounts:\n%+v\nwant\n%+v", agent.VolumeMounts, want)
	}
	mounts, err := agentconfig.ParseMounts(envOf(agent)[agentconfig.EnvMounts].Value)
	if err != nil {
		t.Fatal(err)
	}
	wantMounts := []agentconfig.Mount{
		{Container: "app", Path: "/etc/cart", ReadOnly: true},
		{Container: "app", Path: "/var/cache/cart"},
		{Container: "app", Path: "/etc/one.conf", ReadOnly: true},
	}
	if !reflect.DeepEqual(mounts, wantMounts) {
		t.Errorf("mounts = %+v", mounts)
	}
}
