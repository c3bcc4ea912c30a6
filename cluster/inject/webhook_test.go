package inject

import (
	"reflect"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestMutatingWebhookConfiguration(t *testing.T) {
	base := WebhookOptions{ManagerNamespace: "teledock", ServiceName: "traffic-manager", CABundle: []byte("PEM")}
	for _, tc := range []struct {
		name      string
		opts      func(*WebhookOptions)
		wantIn    []string // namespaces the webhook must see
		wantNotIn []string // namespaces it must not see
		wantName  string
		wantPort  int32
		wantPath  string
	}{
		{
			name:      "cluster-wide",
			wantIn:    []string{"default", "shop"},
			wantNotIn: []string{"kube-system", "teledock"},
			wantName:  "teledock-agent-injector-teledock", wantPort: 443, wantPath: "/inject",
		},
		{
			name: "namespace-scoped",
			opts: func(o *WebhookOptions) {
				o.Namespaces = []string{"shop", "dev"}
				o.Name, o.ServicePort, o.Path = "mine", 8443, "/mutate"
			},
			wantIn:    []string{"shop", "dev"},
			wantNotIn: []string{"default", "kube-system", "teledock"},
			wantName:  "mine", wantPort: 8443, wantPath: "/mutate",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			if tc.opts != nil {
				tc.opts(&o)
			}
			cfg, err := MutatingWebhookConfiguration(o)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Name != tc.wantName || len(cfg.Webhooks) != 1 {
				t.Fatalf("name %q, %d webhooks", cfg.Name, len(cfg.Webhooks))
			}
			wh := cfg.Webhooks[0]
			svc := wh.ClientConfig.Service
			if svc.Namespace != "teledock" || svc.Name != "traffic-manager" || *svc.Port != tc.wantPort || *svc.Path != tc.wantPath {
				t.Errorf("service ref %+v", svc)
			}
			if string(wh.ClientConfig.CABundle) != "PEM" {
				t.Errorf("caBundle %q", wh.ClientConfig.CABundle)
			}
			if *wh.FailurePolicy != admissionregistrationv1.Ignore || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*wh.TimeoutSeconds != 5 || !reflect.DeepEqual(wh.AdmissionReviewVersions, []string{"v1"}) {
				t.Errorf("policy %v side effects %v timeout %v versions %v", *wh.FailurePolicy, *wh.SideEffects, *wh.TimeoutSeconds, wh.AdmissionReviewVersions)
			}
			wantRule := admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
				Scope: ptr(admissionregistrationv1.NamespacedScope)}
			if len(wh.Rules) != 1 || !reflect.DeepEqual(wh.Rules[0].Rule, wantRule) ||
				!reflect.DeepEqual(wh.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
				t.Errorf("rules %+v", wh.Rules)
			}

			nsSel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
			if err != nil {
				t.Fatal(err)
			}
			for _, ns := range tc.wantIn {
				if !nsSel.Matches(labels.Set{namespaceNameLabel: ns}) {
					t.Errorf("namespace %s not selected", ns)
				}
			}
			for _, ns := range tc.wantNotIn {
				if nsSel.Matches(labels.Set{namespaceNameLabel: ns}) {
					t.Errorf("namespace %s selected", ns)
				}
			}

			objSel, err := metav1.LabelSelectorAsSelector(wh.ObjectSelector)
			if err != nil {
				t.Fatal(err)
			}
			for set, want := range map[*labels.Set]bool{
				{"app": "cart"}:        true,
				{OptOutLabel: "true"}:  true,
				{OptOutLabel: "false"}: false,
			} {
				if got := objSel.Matches(*set); got != want {
					t.Errorf("object selector on %v = %v, want %v", *set, got, want)
				}
			}
		})
	}
}

func TestMutatingWebhookConfigurationErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    WebhookOptions
		wantErr string
	}{
		{"no service", WebhookOptions{ManagerNamespace: "teledock", CABundle: []byte("x")}, "manager namespace and service name are required"},
		{"no CA", WebhookOptions{ManagerNamespace: "teledock", ServiceName: "tm"}, "no CA bundle"},
		{"manager namespace listed", WebhookOptions{ManagerNamespace: "teledock", ServiceName: "tm", CABundle: []byte("x"),
			Namespaces: []string{"shop", "teledock"}}, "namespace teledock cannot get agents"},
		{"kube-system listed", WebhookOptions{ManagerNamespace: "teledock", ServiceName: "tm", CABundle: []byte("x"),
			Namespaces: []string{"kube-system"}}, "namespace kube-system cannot get agents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MutatingWebhookConfiguration(tc.opts)
			assertErrContains(t, err, tc.wantErr)
		})
	}
}
