package install

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"reflect"
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"teledock.dev/teledock/cluster/inject"
)

func decode[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	if o == nil {
		t.Fatal("object not rendered")
	}
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestRenderWebhook checks the chart's webhook: its registration is the one
// inject.MutatingWebhookConfiguration describes, its CA bundle verifies the serving certificate for
// the name the API server calls, and the manager serves it behind the Service's port 443.
func TestRenderWebhook(t *testing.T) {
	const ns = "dev-tools"
	objs := objects(t, Config{Namespace: ns, Version: "v0.3.1"})

	secret := objs["Secret/traffic-manager-webhook-tls"]
	if secret == nil {
		t.Fatalf("no webhook Secret in %v", keys(objs))
	}
	pemOf := func(key string) []byte {
		s, _, _ := unstructured.NestedString(secret.Object, "data", key)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) == 0 {
			t.Fatalf("secret key %s: %v", key, err)
		}
		return b
	}
	caPEM, certPEM := pemOf("ca.crt"), pemOf("tls.crt")
	pemOf("tls.key")

	got := decode[admissionregistrationv1.MutatingWebhookConfiguration](t, objs["MutatingWebhookConfiguration/teledock-agent-injector-"+ns])
	want, err := inject.MutatingWebhookConfiguration(inject.WebhookOptions{ManagerNamespace: ns, ServiceName: "traffic-manager", CABundle: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Webhooks) != 1 {
		t.Fatalf("%d webhooks", len(got.Webhooks))
	}
	if string(got.Webhooks[0].ClientConfig.CABundle) != string(caPEM) {
		t.Error("caBundle is not the Secret's CA")
	}
	if !reflect.DeepEqual(got.Webhooks, want.Webhooks) {
		t.Errorf("webhook\n got %+v\nwant %+v", got.Webhooks[0], want.Webhooks[0])
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "traffic-manager." + ns + ".svc"}); err != nil {
		t.Errorf("serving certificate: %v", err)
	}

	svc := objs["Service/traffic-manager"]
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(ports) != 2 {
		t.Fatalf("service ports %v", ports)
	}
	if p := ports[1].(map[string]any); p["port"] != int64(443) || p["targetPort"] != "webhook" {
		t.Errorf("webhook service port %v", p)
	}
	d := objs["Deployment/traffic-manager"]
	vols, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
	if len(vols) != 1 || vols[0].(map[string]any)["secret"].(map[string]any)["secretName"] != "traffic-manager-webhook-tls" {
		t.Errorf("volumes %v", vols)
	}
}

// TestRenderRBAC checks the rights intercepts need.
func TestRenderRBAC(t *testing.T) {
	objs := objects(t, Config{Namespace: "teledock"})
	role := decode[rbacv1.ClusterRole](t, objs["ClusterRole/teledock-traffic-manager-teledock"])
	can := func(group, resource, verb string) bool {
		return slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb)
		})
	}
	type right struct{ group, resource, verb string }
	var want []right
	for _, res := range []string{"deployments", "replicasets", "statefulsets"} {
		for _, v := range []string{"get", "list", "watch", "patch"} {
			want = append(want, right{"apps", res, v})
		}
	}
	for _, res := range []string{"pods", "events", "services", "configmaps"} {
		for _, v := range []string{"get", "list", "watch"} {
			want = append(want, right{"", res, v})
		}
	}
	want = append(want, right{"", "secrets", "get"}, right{"", "configmaps", "create"},
		right{"authentication.k8s.io", "tokenreviews", "create"})
	for _, r := range want {
		if !can(r.group, r.resource, r.verb) {
			t.Errorf("cannot %s %s.%s", r.verb, r.resource, r.group)
		}
	}
	// Least privilege: Secrets are read by name only, and the only ConfigMap it changes or deletes
	// is the agent configs'.
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "secrets") && (len(r.Verbs) != 1 || r.Verbs[0] != "get") {
			t.Errorf("secrets rule grants %v, want get only", r.Verbs)
		}
		if slices.Contains(r.Resources, "configmaps") && (slices.Contains(r.Verbs, "update") || slices.Contains(r.Verbs, "delete")) &&
			!slices.Equal(r.ResourceNames, []string{"teledock-agents"}) {
			t.Errorf("configmaps %v granted for %v, want only teledock-agents", r.Verbs, r.ResourceNames)
		}
	}
	named := slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.Resources, "configmaps") && slices.Contains(r.Verbs, "update") &&
			slices.Contains(r.Verbs, "delete") && slices.Equal(r.ResourceNames, []string{"teledock-agents"})
	})
	if !named {
		t.Error("cannot update and delete the teledock-agents ConfigMaps")
	}
}
