package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// maxReviewBytes bounds a request body: a pod is at most etcd's 1.5 MiB object limit, and
	// a review carries it once for CREATE.
	maxReviewBytes = 4 << 20
	// lookupTimeout leaves the handler time to answer within the webhook's 5 s timeout.
	lookupTimeout = 3 * time.Second
	// maxWarningLen is the length the API server's conventions ask a warning to stay under.
	maxWarningLen = 120
)

// AdmissionHandler is the mutating admission webhook that injects traffic-agents into pods of
// workloads that have an agent config, or that can get one at once because their pod template
// carries the inject-container-ports annotation (see AnnotatedPlanner). It always allows the
// pod: when anything goes wrong the pod is admitted as it is, with a warning, and never blocked
// (the webhook is also registered with failurePolicy Ignore).
type AdmissionHandler struct {
	log     *slog.Logger
	configs ConfigSource
	manager string // the traffic-manager's namespace, named in warnings
}

var _ http.Handler = (*AdmissionHandler)(nil)

// NewAdmissionHandler returns a handler that finds configs in configs, for the traffic-manager in
// namespace manager.
func NewAdmissionHandler(log *slog.Logger, configs ConfigSource, manager string) (*AdmissionHandler, error) {
	if log == nil {
		return nil, errors.New("nil logger")
	}
	if configs == nil {
		return nil, errors.New("nil config source")
	}
	return &AdmissionHandler{log: log, configs: configs, manager: manager}, nil
}

// ServeHTTP decodes an admission.k8s.io/v1 AdmissionReview and answers with one.
func (h *AdmissionHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReviewBytes)).Decode(&review); err != nil || review.Request == nil {
		// Without a request UID there is no response to give; the API server treats the
		// error as a webhook failure and, with failurePolicy Ignore, admits the pod.
		h.log.Warn("bad admission review", "err", err)
		http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
		return
	}
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: h.Review(r.Context(), review.Request),
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		h.log.Warn("write admission response", "err", err)
	}
}

// Review answers one admission request.
func (h *AdmissionHandler) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if !isPodCreate(req) {
		return resp
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		h.log.Warn("decode pod", "uid", req.UID, "err", err)
		return resp
	}
	// A pod being created may have neither a name (generateName) nor a namespace yet.
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	log := h.log.With("namespace", namespace, "pod", podName(&pod))

	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	cfg, err := h.configFor(ctx, namespace, &pod)
	if errors.Is(err, ErrNoConfig) {
		cfg, err = h.planAnnotated(ctx, namespace, &pod)
	}
	if errors.Is(err, ErrNoConfig) {
		return resp
	}
	if err != nil {
		log.Warn("traffic-agent not injected", "err", err)
		resp.Warnings = []string{h.warning(err)}
		return resp
	}
	ops, err := Mutate(&pod, cfg)
	if err != nil {
		log.Warn("traffic-agent not injected", "workload", cfg.WorkloadName, "err", err)
		resp.Warnings = []string{h.warning(err)}
		return resp
	}
	if len(ops) == 0 {
		return resp
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		log.Warn("marshal patch", "err", err)
		return resp
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	log.Info("injecting traffic-agent", "workload", cfg.WorkloadKind+"/"+cfg.WorkloadName)
	return resp
}

func isPodCreate(req *admissionv1.AdmissionRequest) bool {
	return req.Operation == admissionv1.Create && req.SubResource == "" &&
		req.Kind.Group == "" && req.Kind.Kind == "Pod"
}

// configFor finds the config of the workload that owns the pod. It returns an error wrapping
// ErrNoConfig when the pod has no owning workload or the workload has no config.
func (h *AdmissionHandler) configFor(ctx context.Context, namespace string, pod *corev1.Pod) (AgentConfig, error) {
	for _, ref := range ownerWorkloads(pod) {
		cfg, err := h.configs.AgentConfig(ctx, namespace, ref.name)
		if errors.Is(err, ErrNoConfig) {
			continue
		}
		if err != nil {
			return AgentConfig{}, err
		}
		// Configs are keyed by name only; a Deployment and a StatefulSet may share one.
		if cfg.WorkloadKind == ref.kind {
			return cfg, nil
		}
	}
	return AgentConfig{}, ErrNoConfig
}

// AnnotatedPlanner is a ConfigSource that can also make a config on demand. The handler asks it
// for pods whose template carries the inject-container-ports annotation and whose workload has
// no config yet, so that such a workload gets its agent when it is deployed rather than through
// a rollout at its first intercept.
type AnnotatedPlanner interface {
	// PlanAnnotated plans and stores the config of the workload of that kind and name, and
	// returns it. It returns an error wrapping ErrNoConfig when there is no such workload or its
	// pod template does not carry the annotation.
	PlanAnnotated(ctx context.Context, namespace, kind, name string) (AgentConfig, error)
}

// planAnnotated has the config source plan a config for the pod's workload when the pod carries
// the inject-container-ports annotation. It returns an error wrapping ErrNoConfig when there is
// nothing to plan.
func (h *AdmissionHandler) planAnnotated(ctx context.Context, namespace string, pod *corev1.Pod) (AgentConfig, error) {
	planner, ok := h.configs.(AnnotatedPlanner)
	if !ok || !hasInjectPorts(pod.Annotations) {
		return AgentConfig{}, ErrNoConfig
	}
	// A bad value fails here, without a round trip to the planner that would fail on it too.
	if _, err := InjectPorts(pod.Annotations); err != nil {
		return AgentConfig{}, err
	}
	for _, ref := range ownerWorkloads(pod) {
		cfg, err := planner.PlanAnnotated(ctx, namespace, ref.kind, ref.name)
		if errors.Is(err, ErrNoConfig) {
			continue
		}
		if err != nil {
			return AgentConfig{}, fmt.Errorf("plan agent config of %s %s: %w", ref.kind, ref.name, err)
		}
		return cfg, nil
	}
	return AgentConfig{}, ErrNoConfig
}

func hasInjectPorts(annotations map[string]string) bool {
	_, ok := annotations[AnnotationInjectPorts]
	_, legacy := annotations[LegacyAnnotationInjectPorts]
	return ok || legacy
}

type workloadRef struct{ kind, name string }

// ownerWorkloads names the workloads that may own the pod, most likely first, from its
// controller reference alone, so that admission needs no API call for it. A Deployment's pods
// are owned by a ReplicaSet named "<deployment>-<pod-template-hash>", and carry that hash as a
// label.
func ownerWorkloads(pod *corev1.Pod) []workloadRef {
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return nil
	}
	switch owner.Kind {
	case "ReplicaSet":
		refs := []workloadRef{{"ReplicaSet", owner.Name}}
		if hash := pod.Labels["pod-template-hash"]; hash != "" {
			if dep, ok := strings.CutSuffix(owner.Name, "-"+hash); ok && dep != "" {
				refs = append([]workloadRef{{"Deployment", dep}}, refs...)
			}
		}
		return refs
	case "StatefulSet", "DaemonSet":
		return []workloadRef{{owner.Kind, owner.Name}}
	}
	return nil
}

func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}

// warning names the manager: with several installed, each one's injector sees every pod, and the
// API server shows identical warnings once.
func (h *AdmissionHandler) warning(err error) string {
	s := fmt.Sprintf("teledock (manager %s): traffic-agent not injected: %v", h.manager, err)
	if len(s) > maxWarningLen {
		s = strings.ToValidUTF8(s[:maxWarningLen-3], "") + "..."
	}
	return s
}
