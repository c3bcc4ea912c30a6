package inject

import (
	"errors"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"teledock.dev/teledock/agent/agentconfig"
)

var testSettings = Settings{AgentImage: "teledock/agent:test", ManagerAddress: "traffic-manager.teledock:8081"}

func cport(name string, n int32, proto corev1.Protocol) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: n, Protocol: proto}
}

// cartWorkload is a Deployment whose app container serves http (8080) and metrics (9090), next
// to a sidecar that serves DNS over UDP.
func cartWorkload() Workload {
	return Workload{Kind: "Deployment", Name: "cart", Namespace: "shop", Template: corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "cart", "tier": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Ports: []corev1.ContainerPort{cport("http", 8080, ""), cport("metrics", 9090, corev1.ProtocolTCP)}},
			{Name: "dns", Ports: []corev1.ContainerPort{cport("dns", 5353, corev1.ProtocolUDP)}},
		}},
	}}
}

func svc(name string, selector map[string]string, ports ...corev1.ServicePort) corev1.Service {
	return corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name)},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports, ClusterIP: "10.96.0.10"},
	}
}

func sport(name string, port int32, target intstr.IntOrString, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: proto}
}

var cartSelector = map[string]string{"app": "cart"}

func wantConfig(targets ...agentconfig.Target) AgentConfig {
	return AgentConfig{
		Version: agentconfig.SchemaVersion, Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "cart",
		AgentImage: testSettings.AgentImage, ManagerAddress: testSettings.ManagerAddress, Targets: targets,
	}
}

func renameTarget(service, portName string, port uint16, agentPort uint16) agentconfig.Target {
	return agentconfig.Target{
		ServiceName: service, ServiceUID: "uid-" + service, ServicePortName: portName, ServicePort: port,
		Protocol: agentconfig.TCP, TargetPort: "http", ContainerName: "app", ContainerPortName: "http",
		ContainerPort: 8080, AgentPort: agentPort, Mode: agentconfig.ModeRename, RenamedPortName: "tm-http",
	}
}

func TestPlan(t *testing.T) {
	headless := svc("cart-hl", cartSelector, sport("", 8080, intstr.FromString("http"), ""))
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	externalName := svc("cart-ext", cartSelector, sport("http", 80, intstr.FromString("http"), ""))
	externalName.Spec.Type = corev1.ServiceTypeExternalName
	otherNS := svc("cart-other", cartSelector, sport("http", 80, intstr.FromString("http"), ""))
	otherNS.Namespace = "elsewhere"

	for _, tc := range []struct {
		name     string
		workload func(*Workload)
		services []corev1.Service
		want     AgentConfig
	}{
		{
			name:     "symbolic targetPort renames",
			services: []corev1.Service{svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), ""))},
			want:     wantConfig(renameTarget("cart", "http", 80, 9900)),
		},
		{
			name: "numeric targetPort redirects, by number and by defaulted targetPort",
			services: []corev1.Service{svc("cart", cartSelector,
				sport("metrics", 90, intstr.FromInt32(9090), ""),
				sport("direct", 8080, intstr.IntOrString{}, corev1.ProtocolTCP))},
			want: wantConfig(
				agentconfig.Target{ServiceName: "cart", ServiceUID: "uid-cart", ServicePortName: "metrics", ServicePort: 90,
					Protocol: agentconfig.TCP, TargetPort: "9090", ContainerName: "app", ContainerPortName: "metrics",
					ContainerPort: 9090, AgentPort: 9900, Mode: agentconfig.ModeRedirect},
				agentconfig.Target{ServiceName: "cart", ServiceUID: "uid-cart", ServicePortName: "direct", ServicePort: 8080,
					Protocol: agentconfig.TCP, TargetPort: "8080", ContainerName: "app", ContainerPortName: "http",
					ContainerPort: 8080, AgentPort: 9901, Mode: agentconfig.ModeRedirect},
			),
		},
		{
			name: "headless redirects and shares the agent port of the same container port; services sorted; others ignored",
			services: []corev1.Service{
				headless, externalName, otherNS,
				svc("unrelated", map[string]string{"app": "other"}, sport("http", 80, intstr.FromString("http"), "")),
				svc("no-selector", nil, sport("http", 80, intstr.FromString("http"), "")),
				svc("cart", map[string]string{"app": "cart", "tier": "web"}, sport("http", 80, intstr.FromString("http"), "")),
			},
			want: wantConfig(
				renameTarget("cart", "http", 80, 9900),
				agentconfig.Target{ServiceName: "cart-hl", ServiceUID: "uid-cart-hl", ServicePort: 8080,
					Protocol: agentconfig.TCP, TargetPort: "http", ContainerName: "app", ContainerPortName: "http",
					ContainerPort: 8080, AgentPort: 9900, Mode: agentconfig.ModeRedirect},
			),
		},
		{
			name: "UDP port of a sidecar container",
			services: []corev1.Service{svc("cart", cartSelector,
				sport("dns", 53, intstr.FromString("dns"), corev1.ProtocolUDP),
				sport("dns-tcp", 53, intstr.FromString("dns"), corev1.ProtocolTCP), // no TCP port named dns: left out
				sport("sctp", 99, intstr.FromInt32(99), corev1.ProtocolSCTP),       // not supported: left out
			)},
			want: wantConfig(agentconfig.Target{ServiceName: "cart", ServiceUID: "uid-cart", ServicePortName: "dns", ServicePort: 53,
				Protocol: agentconfig.UDP, TargetPort: "dns", ContainerName: "dns", ContainerPortName: "dns",
				ContainerPort: 5353, AgentPort: 9900, Mode: agentconfig.ModeRename, RenamedPortName: "tm-dns"}),
		},
		{
			name: "annotation without service",
			workload: func(w *Workload) {
				w.Template.Annotations = map[string]string{LegacyAnnotationInjectPorts: "metrics,5353,8080/TCP"}
			},
			want: wantConfig(
				agentconfig.Target{Protocol: agentconfig.TCP, ContainerName: "app", ContainerPortName: "metrics",
					ContainerPort: 9090, AgentPort: 9900, Mode: agentconfig.ModeRedirect},
				agentconfig.Target{Protocol: agentconfig.UDP, ContainerName: "dns", ContainerPortName: "dns",
					ContainerPort: 5353, AgentPort: 9901, Mode: agentconfig.ModeRedirect},
				agentconfig.Target{Protocol: agentconfig.TCP, ContainerName: "app", ContainerPortName: "http",
					ContainerPort: 8080, AgentPort: 9902, Mode: agentconfig.ModeRedirect},
			),
		},
		{
			name: "undeclared port of a single-container pod",
			workload: func(w *Workload) {
				w.Template.Spec.Containers = w.Template.Spec.Containers[:1]
				w.Template.Annotations = map[string]string{AnnotationInjectPorts: "7000/UDP"}
			},
			services: []corev1.Service{svc("cart", cartSelector, sport("", 80, intstr.FromInt32(3000), ""))},
			want: wantConfig(
				agentconfig.Target{ServiceName: "cart", ServiceUID: "uid-cart", ServicePort: 80, Protocol: agentconfig.TCP,
					TargetPort: "3000", ContainerName: "app", ContainerPort: 3000, AgentPort: 9900, Mode: agentconfig.ModeRedirect},
				agentconfig.Target{Protocol: agentconfig.UDP, ContainerName: "app", ContainerPort: 7000, AgentPort: 9901,
					Mode: agentconfig.ModeRedirect},
			),
		},
		{
			name: "agent ports skip declared ports; renamed names stay unique and short",
			workload: func(w *Workload) {
				c := &w.Template.Spec.Containers[0]
				c.Ports = []corev1.ContainerPort{cport("http", 8080, ""), cport("tm-http", 9900, ""), cport("long-port-name1", 9901, "")}
				w.Template.Spec.InitContainers = []corev1.Container{{Name: "native-sidecar", Ports: []corev1.ContainerPort{cport("", 9902, "")}}}
				// An agent left in the template is not an app container.
				w.Template.Spec.Containers = append(w.Template.Spec.Containers,
					corev1.Container{Name: AgentContainerName, Ports: []corev1.ContainerPort{cport("http", 9999, "")}})
			},
			services: []corev1.Service{svc("cart", cartSelector,
				sport("http", 80, intstr.FromString("http"), ""), sport("long", 81, intstr.FromString("long-port-name1"), ""))},
			want: wantConfig(
				agentconfig.Target{ServiceName: "cart", ServiceUID: "uid-cart", ServicePortName: "http", ServicePort: 80,
					Protocol: agentconfig.TCP, TargetPort: "http", ContainerName: "app", ContainerPortName: "http",
					ContainerPort: 8080, AgentPort: 9903, Mode: agentconfig.ModeRename, RenamedPortName: "tm1-http"},
				agentconfig.Target{ServiceName: "cart", ServiceUID: "uid-cart", ServicePortName: "long", ServicePort: 81,
					Protocol: agentconfig.TCP, TargetPort: "long-port-name1", ContainerName: "app", ContainerPortName: "long-port-name1",
					ContainerPort: 9901, AgentPort: 9904, Mode: agentconfig.ModeRename, RenamedPortName: "tm-long-port-na"},
			),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := cartWorkload()
			if tc.workload != nil {
				tc.workload(&w)
			}
			got, err := Plan(w, tc.services, testSettings)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		workload func(*Workload)
		services []corev1.Service
		settings *Settings
		wantIs   error
		wantErr  string
	}{
		{
			name:    "no service, no annotation",
			wantIs:  ErrNoTargets,
			wantErr: `nothing to intercept: Deployment shop/cart: no service selects its pods (labels "app=cart,tier=web") and its pod template has no teledock.dev/inject-container-ports annotation`,
		},
		{
			name: "no service port maps",
			services: []corev1.Service{
				svc("cart", cartSelector, sport("web", 80, intstr.FromString("web"), ""), sport("", 81, intstr.FromInt32(81), corev1.ProtocolSCTP)),
				svc("cart2", cartSelector, sport("", 82, intstr.FromInt32(82), "")),
			},
			wantIs: ErrNoTargets,
			wantErr: `nothing to intercept: Deployment shop/cart: no port of the services that select it (cart, cart2) maps to a container port: ` +
				`service cart port web (80): container port not found: no container has a TCP port named "web"; ` +
				`service cart port 81: protocol SCTP is not supported; ` +
				`service cart2 port 82: container port not found: no container declares port 82/TCP, and with 2 containers the one serving it is unknown; declare it in that container's ports`,
		},
		{
			name:     "annotation names a missing port",
			workload: func(w *Workload) { w.Template.Annotations = map[string]string{AnnotationInjectPorts: "http,grpc"} },
			services: []corev1.Service{svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), ""))},
			wantIs:   ErrPortNotFound,
			wantErr:  `Deployment shop/cart: annotation teledock.dev/inject-container-ports: container port not found: no container has a port named "grpc"`,
		},
		{
			name:     "annotation names a port with the wrong protocol",
			workload: func(w *Workload) { w.Template.Annotations = map[string]string{LegacyAnnotationInjectPorts: "dns/TCP"} },
			wantIs:   ErrPortNotFound,
			wantErr:  `annotation telepresence.getambassador.io/inject-container-ports: container port not found: no container has a TCP port named "dns"`,
		},
		{
			name:     "annotation number undeclared in a multi-container pod",
			workload: func(w *Workload) { w.Template.Annotations = map[string]string{AnnotationInjectPorts: "7000"} },
			wantIs:   ErrPortNotFound,
			wantErr:  `no container declares port 7000/TCP, and with 2 containers the one serving it is unknown`,
		},
		{
			name:     "bad annotation",
			workload: func(w *Workload) { w.Template.Annotations = map[string]string{AnnotationInjectPorts: "http/SCTP"} },
			wantIs:   ErrBadAnnotation,
			wantErr:  `Deployment shop/cart: bad annotation teledock.dev/inject-container-ports: bad item "http/SCTP"`,
		},
		{
			name:     "host network",
			workload: func(w *Workload) { w.Template.Spec.HostNetwork = true },
			services: []corev1.Service{svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), ""))},
			wantIs:   ErrHostNetwork,
			wantErr:  "Deployment shop/cart: pods on the host network cannot get a traffic-agent",
		},
		{
			name:     "no image",
			settings: &Settings{ManagerAddress: "m:1"},
			wantIs:   ErrSettings,
			wantErr:  "invalid injector settings: no agent image",
		},
		{
			name:     "bad manager address",
			settings: &Settings{AgentImage: "i", ManagerAddress: "manager"},
			wantIs:   ErrSettings,
			wantErr:  `invalid injector settings: manager address "manager": address manager: missing port in address`,
		},
		{
			name:     "agent ports exhausted",
			settings: &Settings{AgentImage: "i", ManagerAddress: "m:1", FirstAgentPort: 65535},
			workload: func(w *Workload) { w.Template.Annotations = map[string]string{AnnotationInjectPorts: "http,metrics"} },
			wantErr:  "Deployment shop/cart: no free agent port from 65535 up",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := cartWorkload()
			if tc.workload != nil {
				tc.workload(&w)
			}
			s := testSettings
			if tc.settings != nil {
				s = *tc.settings
			}
			_, err := Plan(w, tc.services, s)
			assertErrContains(t, err, tc.wantErr)
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("%v is not %v", err, tc.wantIs)
			}
		})
	}
}

func TestWorkloadOf(t *testing.T) {
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}}}
	meta := metav1.ObjectMeta{Name: "x", Namespace: "ns"}
	for _, tc := range []struct {
		obj      runtime.Object
		wantKind string
	}{
		{&appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{Template: tmpl}}, "Deployment"},
		{&appsv1.ReplicaSet{ObjectMeta: meta, Spec: appsv1.ReplicaSetSpec{Template: tmpl}}, "ReplicaSet"},
		{&appsv1.StatefulSet{ObjectMeta: meta, Spec: appsv1.StatefulSetSpec{Template: tmpl}}, "StatefulSet"},
		{&appsv1.DaemonSet{ObjectMeta: meta, Spec: appsv1.DaemonSetSpec{Template: tmpl}}, "DaemonSet"},
	} {
		t.Run(tc.wantKind, func(t *testing.T) {
			got, err := WorkloadOf(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			want := Workload{Kind: tc.wantKind, Name: "x", Namespace: "ns", Template: tmpl}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
	t.Run("Job", func(t *testing.T) {
		_, err := WorkloadOf(&corev1.Pod{})
		if !errors.Is(err, ErrUnsupportedWorkload) {
			t.Errorf("err = %v, want ErrUnsupportedWorkload", err)
		}
	})
}
