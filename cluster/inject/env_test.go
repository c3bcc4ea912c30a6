package inject

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func envFixtures() []runtime.Object {
	return []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "shop"},
			Data: map[string]string{"LOG_LEVEL": "debug", "REGION": "eu", "db.host": "db:5432"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: "shop"},
			Data: map[string][]byte{"PASSWORD": []byte("s3cret"), "TOKEN": []byte("t0k")}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "shop"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hidden", Namespace: "elsewhere"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.30", Ports: []corev1.ServicePort{{Port: 80}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"),
			corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		}}},
	}
}

func envPod(env []corev1.EnvVar, envFrom ...corev1.EnvFromSource) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cart-5d4b8-xk2lp", Namespace: "shop", UID: "pod-uid",
			Labels:      map[string]string{"app": "cart", "tier": "web"},
			Annotations: map[string]string{"team": "checkout"}},
		Spec: corev1.PodSpec{
			NodeName: "node-1", ServiceAccountName: "cart-sa",
			Containers: []corev1.Container{
				{Name: "app", Env: env, EnvFrom: envFrom, Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("100Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m")},
				}},
				{Name: "sidecar", Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi"), "hugepages-2Mi": resource.MustParse("4Mi")},
				}},
			},
		},
		Status: corev1.PodStatus{
			PodIP: "10.244.0.7", PodIPs: []corev1.PodIP{{IP: "10.244.0.7"}, {IP: "fd00::7"}},
			HostIP: "192.168.1.10", HostIPs: []corev1.HostIP{{IP: "192.168.1.10"}, {IP: "fd01::10"}},
		},
	}
}

func lit(name, value string) corev1.EnvVar { return corev1.EnvVar{Name: name, Value: value} }

func field(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func res(name, container, resName, divisor string) corev1.EnvVar {
	sel := &corev1.ResourceFieldSelector{ContainerName: container, Resource: resName}
	if divisor != "" {
		sel.Divisor = resource.MustParse(divisor)
	}
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: sel}}
}

func cmKey(name, cm, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Key: key, Optional: &optional}}}
}

func secretKey(name, secret, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key, Optional: &optional}}}
}

func fromCM(name, prefix string, optional bool) corev1.EnvFromSource {
	return corev1.EnvFromSource{Prefix: prefix, ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: &optional}}
}

func fromSecret(name, prefix string, optional bool) corev1.EnvFromSource {
	return corev1.EnvFromSource{Prefix: prefix, SecretRef: &corev1.SecretEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: &optional}}
}

// serviceVars are the variables every pod of the fixtures gets from services.
var serviceVars = map[string]string{
	"CART_SERVICE_HOST": "10.96.0.20", "CART_SERVICE_PORT": "80", "CART_SERVICE_PORT_HTTP": "80",
	"CART_PORT": "tcp://10.96.0.20:80", "CART_PORT_80_TCP": "tcp://10.96.0.20:80", "CART_PORT_80_TCP_PROTO": "tcp",
	"CART_PORT_80_TCP_PORT": "80", "CART_PORT_80_TCP_ADDR": "10.96.0.20",
	"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
	"KUBERNETES_PORT": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
	"KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}

func TestResolveEnv(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		container string
		want      map[string]string // in addition to serviceVars, unless noServices
		noService bool
	}{
		{
			name: "literals and expansion",
			pod: envPod([]corev1.EnvVar{
				lit("A", "alpha"),
				lit("B", "$(A)-$(LOG_LEVEL)-$(LATER)"),
				lit("URL", "http://$(CART_SERVICE_HOST):$(CART_SERVICE_PORT)/"),
				lit("ESCAPED", "$$(A)"),
				lit("LATER", "late"),
				{Name: "EMPTY"},
			}, fromCM("settings", "", false)),
			want: map[string]string{
				"A": "alpha", "B": "alpha-debug-$(LATER)", "URL": "http://10.96.0.20:80/", "ESCAPED": "$(A)",
				"LATER": "late", "EMPTY": "", "LOG_LEVEL": "debug", "REGION": "eu", "db.host": "db:5432",
			},
		},
		{
			name: "envFrom with prefixes; env wins over envFrom and over services",
			pod: envPod([]corev1.EnvVar{lit("CFG_REGION", "us"), lit("CART_SERVICE_PORT", "8080")},
				fromCM("settings", "CFG_", false), fromSecret("creds", "", false),
				fromCM("missing", "", true), fromSecret("missing", "", true)),
			want: map[string]string{
				"CFG_LOG_LEVEL": "debug", "CFG_REGION": "us", "CFG_db.host": "db:5432",
				"PASSWORD": "s3cret", "TOKEN": "t0k", "CART_SERVICE_PORT": "8080",
			},
		},
		{
			name: "configMap and secret keys, optional ones skipped",
			pod: envPod([]corev1.EnvVar{
				cmKey("LEVEL", "settings", "LOG_LEVEL", false),
				secretKey("PW", "creds", "PASSWORD", false),
				cmKey("NO_KEY", "settings", "nope", true),
				cmKey("NO_CM", "missing", "x", true),
				secretKey("NO_SECRET_KEY", "creds", "nope", true),
				secretKey("NO_SECRET", "missing", "x", true),
			}),
			want: map[string]string{"LEVEL": "debug", "PW": "s3cret"},
		},
		{
			name: "field paths",
			pod: envPod([]corev1.EnvVar{
				field("NAME", "metadata.name"), field("NS", "metadata.namespace"), field("UID", "metadata.uid"),
				field("APP", "metadata.labels['app']"), field("TEAM", "metadata.annotations['team']"),
				field("NONE", "metadata.labels['none']"), field("LABELS", "metadata.labels"),
				field("NODE", "spec.nodeName"), field("SA", "spec.serviceAccountName"),
				field("HOST_IP", "status.hostIP"), field("HOST_IPS", "status.hostIPs"),
				field("POD_IP", "status.podIP"), field("POD_IPS", "status.podIPs"),
				lit("SELF", "http://$(POD_IP):8080"),
			}),
			want: map[string]string{
				"NAME": "cart-5d4b8-xk2lp", "NS": "shop", "UID": "pod-uid", "APP": "cart", "TEAM": "checkout", "NONE": "",
				"LABELS": "app=\"cart\"\ntier=\"web\"", "NODE": "node-1", "SA": "cart-sa",
				"HOST_IP": "192.168.1.10", "HOST_IPS": "192.168.1.10,fd01::10",
				"POD_IP": "10.244.0.7", "POD_IPS": "10.244.0.7,fd00::7", "SELF": "http://10.244.0.7:8080",
			},
		},
		{
			name: "resources: divisors round up, unset limits come from the node",
			pod: envPod([]corev1.EnvVar{
				res("CPU_LIMIT", "", "limits.cpu", ""),
				res("CPU_LIMIT_M", "", "limits.cpu", "1m"),
				res("CPU_REQUEST", "", "requests.cpu", ""),
				res("CPU_REQUEST_M", "", "requests.cpu", "1m"),
				res("MEM_REQUEST_MI", "", "requests.memory", "1Mi"),
				res("MEM_LIMIT", "", "limits.memory", ""),
				res("STORAGE_REQUEST", "", "requests.ephemeral-storage", ""),
				res("STORAGE_LIMIT_GI", "", "limits.ephemeral-storage", "1Gi"),
				res("SIDECAR_MEM_MI", "sidecar", "limits.memory", "1Mi"),
				res("SIDECAR_CPU", "sidecar", "limits.cpu", ""),
				res("SIDECAR_HUGE", "sidecar", "limits.hugepages-2Mi", "1Mi"),
			}),
			want: map[string]string{
				"CPU_LIMIT": "2", "CPU_LIMIT_M": "1500", "CPU_REQUEST": "1", "CPU_REQUEST_M": "250",
				"MEM_REQUEST_MI": "100", "MEM_LIMIT": "8589934592", "STORAGE_REQUEST": "0", "STORAGE_LIMIT_GI": "100",
				"SIDECAR_MEM_MI": "64", "SIDECAR_CPU": "4", "SIDECAR_HUGE": "4",
			},
		},
		{
			name: "pod-level limits before the node's",
			pod: func() *corev1.Pod {
				p := envPod([]corev1.EnvVar{res("MEM", "", "limits.memory", "1Mi"), res("CPU", "", "limits.cpu", "1m")})
				p.Spec.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}
				return p
			}(),
			want: map[string]string{"MEM": "512", "CPU": "1500"},
		},
		{
			name: "service links off: only the kubernetes service",
			pod: func() *corev1.Pod {
				p := envPod([]corev1.EnvVar{lit("X", "$(CART_SERVICE_HOST)")})
				p.Spec.EnableServiceLinks = new(bool)
				return p
			}(),
			noService: true,
			want: map[string]string{
				"X": "$(CART_SERVICE_HOST)", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
				"KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": "tcp://10.96.0.1:443",
				"KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
				"KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
			},
		},
		{
			name: "init container",
			pod: func() *corev1.Pod {
				p := envPod(nil)
				p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Env: []corev1.EnvVar{lit("STEP", "1")}}}
				return p
			}(),
			container: "migrate",
			want:      map[string]string{"STEP": "1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(envFixtures()...)
			container := tc.container
			if container == "" {
				container = "app"
			}
			got, err := ResolveEnv(context.Background(), client, tc.pod, container)
			if err != nil {
				t.Fatal(err)
			}
			want := make(map[string]string)
			if !tc.noService {
				maps.Copy(want, serviceVars)
			}
			maps.Copy(want, tc.want)
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("%s = %q (set: %v), want %q", k, g, ok, v)
				}
			}
			for k, v := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected %s=%q", k, v)
				}
			}
		})
	}
}

func TestResolveEnvErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pod       func() *corev1.Pod
		container string
		reactor   func(*fake.Clientset)
		wantIs    error
		wantErr   string
	}{
		{name: "no such container", pod: func() *corev1.Pod { return envPod(nil) }, container: "nope",
			wantIs: ErrContainerNotFound, wantErr: `container not found: pod shop/cart-5d4b8-xk2lp has no container "nope"`},
		{name: "required configmap missing", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{cmKey("X", "missing", "k", false)}) },
			wantErr: `env X: get ConfigMap shop/missing: configmaps "missing" not found`},
		{name: "required key missing", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{cmKey("X", "settings", "nope", false)}) },
			wantIs: ErrEnvSource, wantErr: `env X: unresolvable env source: key "nope" not found in ConfigMap shop/settings`},
		{name: "required secret key missing", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{secretKey("X", "creds", "nope", false)}) },
			wantIs: ErrEnvSource, wantErr: `env X: unresolvable env source: key "nope" not found in Secret shop/creds`},
		{name: "required secret missing", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{secretKey("X", "missing", "k", false)}) },
			wantErr: `env X: get Secret shop/missing: secrets "missing" not found`},
		{name: "required envFrom missing", pod: func() *corev1.Pod { return envPod(nil, fromSecret("missing", "", false)) },
			wantErr: `envFrom: get Secret shop/missing: secrets "missing" not found`},
		{name: "unsupported field", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{field("X", "spec.hostname")}) },
			wantIs: ErrEnvSource, wantErr: `env X: unresolvable env source: unsupported fieldPath "spec.hostname"`},
		{name: "subscript on a plain field", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{field("X", "metadata.name['x']")}) },
			wantIs: ErrEnvSource, wantErr: `fieldPath "metadata.name['x']" takes no subscript`},
		{name: "unsupported resource", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{res("X", "", "limits.nvidia.com/gpu", "")}) },
			wantIs: ErrEnvSource, wantErr: `env X: unresolvable env source: unsupported resource "limits.nvidia.com/gpu"`},
		{name: "resource of a missing container", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{res("X", "nope", "limits.cpu", "")}) },
			wantIs: ErrContainerNotFound, wantErr: `resourceFieldRef container "nope"`},
		{name: "unscheduled pod without limit", pod: func() *corev1.Pod {
			p := envPod([]corev1.EnvVar{res("X", "", "limits.memory", "")})
			p.Spec.NodeName = ""
			return p
		}, wantIs: ErrEnvSource, wantErr: "env X: limits.memory: unresolvable env source: no limit set and the pod is not on a node yet"},
		{name: "node not readable", pod: func() *corev1.Pod { return envPod([]corev1.EnvVar{res("X", "", "limits.memory", "")}) },
			reactor: func(c *fake.Clientset) {
				c.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(corev1.Resource("nodes"), "node-1", errors.New("no RBAC"))
				})
			},
			wantErr: `env X: limits.memory: no limit set, and the node's allocatable is unknown: get node node-1: nodes "node-1" is forbidden: no RBAC`},
		{name: "file key", pod: func() *corev1.Pod {
			return envPod([]corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{FileKeyRef: &corev1.FileKeySelector{VolumeName: "cfg", Path: "a.env", Key: "X"}}}})
		}, wantIs: ErrEnvSource, wantErr: `fileKeyRef reads a file in the pod's volume "cfg"`},
		{name: "services not listable", pod: func() *corev1.Pod { return envPod(nil) },
			reactor: func(c *fake.Clientset) {
				c.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(corev1.Resource("services"), "", errors.New("no RBAC"))
				})
			},
			wantErr: "list services in shop: services is forbidden: no RBAC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(envFixtures()...)
			if tc.reactor != nil {
				tc.reactor(client)
			}
			container := tc.container
			if container == "" {
				container = "app"
			}
			_, err := ResolveEnv(context.Background(), client, tc.pod(), container)
			assertErrContains(t, err, tc.wantErr)
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("%v is not %v", err, tc.wantIs)
			}
		})
	}
}

// A namespace-scoped install may not read the default namespace; the pod's own services still
// count.
func TestResolveEnvMasterServiceForbidden(t *testing.T) {
	client := fake.NewClientset(envFixtures()...)
	client.PrependReactor("get", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "default" {
			return true, nil, apierrors.NewForbidden(corev1.Resource("services"), "kubernetes", errors.New("no RBAC"))
		}
		return false, nil, nil
	})
	got, err := ResolveEnv(context.Background(), client, envPod(nil), "app")
	if err != nil {
		t.Fatal(err)
	}
	for k := range got {
		if strings.HasPrefix(k, "KUBERNETES_") {
			t.Errorf("unexpected %s", k)
		}
	}
	if got["CART_SERVICE_HOST"] != "10.96.0.20" {
		t.Errorf("CART_SERVICE_HOST = %q", got["CART_SERVICE_HOST"])
	}
}
