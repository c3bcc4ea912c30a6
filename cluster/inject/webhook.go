package inject

import (
	"errors"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of WebhookOptions.
const (
	DefaultWebhookPath = "/inject"
	DefaultWebhookPort = 443
	// webhookName is the name of the webhook inside the configuration; it must be a fully
	// qualified name.
	webhookName = "agent-injector.teledock.dev"
	// namespaceNameLabel is set by the API server on every namespace (Kubernetes 1.22+).
	namespaceNameLabel = "kubernetes.io/metadata.name"
	// OptOutLabel on a pod with the value "false" keeps the webhook away from it.
	OptOutLabel = "teledock.dev/inject"
)

// WebhookOptions describe the traffic-manager's webhook service.
type WebhookOptions struct {
	// Name of the MutatingWebhookConfiguration, a cluster-wide object; default
	// "teledock-agent-injector-<ManagerNamespace>" so that two installs do not collide.
	Name             string
	ManagerNamespace string
	ServiceName      string
	ServicePort      int32  // default DefaultWebhookPort
	Path             string // default DefaultWebhookPath
	CABundle         []byte // PEM of the CA that signed the webhook's serving certificate
	// Namespaces, when set, limits the webhook to these namespaces (a namespace-scoped
	// install); otherwise every namespace but kube-system and the manager's own is covered.
	Namespaces []string
}

// MutatingWebhookConfiguration builds the registration of the agent injector. It only sees pod
// CREATEs, fails open (failurePolicy Ignore: an unreachable manager must never stop pods from
// starting), has no side effects, and gives up after 5 s.
func MutatingWebhookConfiguration(o WebhookOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	if o.ManagerNamespace == "" || o.ServiceName == "" {
		return nil, errors.New("webhook: manager namespace and service name are required")
	}
	if len(o.CABundle) == 0 {
		return nil, errors.New("webhook: no CA bundle")
	}
	if o.Name == "" {
		o.Name = "teledock-agent-injector-" + o.ManagerNamespace
	}
	if o.ServicePort == 0 {
		o.ServicePort = DefaultWebhookPort
	}
	if o.Path == "" {
		o.Path = DefaultWebhookPath
	}

	namespaces := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: namespaceNameLabel, Operator: metav1.LabelSelectorOpNotIn,
		Values: []string{metav1.NamespaceSystem, o.ManagerNamespace},
	}}}
	if len(o.Namespaces) > 0 {
		for _, ns := range o.Namespaces {
			if ns == metav1.NamespaceSystem || ns == o.ManagerNamespace {
				return nil, fmt.Errorf("webhook: namespace %s cannot get agents", ns)
			}
		}
		namespaces = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: namespaceNameLabel, Operator: metav1.LabelSelectorOpIn, Values: o.Namespaces,
		}}}
	}

	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   o.Name,
			Labels: map[string]string{managedByLabel: "teledock"},
		},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: webhookName,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{
					Namespace: o.ManagerNamespace, Name: o.ServiceName, Path: &o.Path, Port: &o.ServicePort,
				},
				CABundle: o.CABundle,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
					Scope: ptr(admissionregistrationv1.NamespacedScope),
				},
			}},
			NamespaceSelector: namespaces,
			// NotIn also matches pods without the label, so only an explicit opt-out counts.
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: OptOutLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"},
			}}},
			FailurePolicy:           ptr(admissionregistrationv1.Ignore),
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr(int32(5)),
			AdmissionReviewVersions: []string{"v1"},
			// Another webhook that adds containers after ours does not undo the agent, and the
			// handler is idempotent anyway.
			ReinvocationPolicy: ptr(admissionregistrationv1.NeverReinvocationPolicy),
		}},
	}, nil
}
