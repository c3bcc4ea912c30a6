package inject

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

var (
	// ErrContainerNotFound means the pod has no container by the name asked for.
	ErrContainerNotFound = errors.New("container not found")
	// ErrEnvSource means an env var's source cannot give a value: a required key is missing, or
	// the source is of a kind the API cannot answer.
	ErrEnvSource = errors.New("unresolvable env source")
)

// masterService is the service whose variables every pod gets, even with enableServiceLinks
// off: in-cluster clients find the API server through KUBERNETES_SERVICE_HOST.
const masterService = "kubernetes"

// ResolveEnv returns the environment of a container of a pod as the kubelet makes it: the
// envFrom sources with their prefixes, then the env entries in order — literal values with
// $(VAR) references to earlier variables and service variables expanded, configMapKeyRef and
// secretKeyRef (a missing source or key is skipped when optional and an error otherwise),
// fieldRef, and resourceFieldRef with its divisor, an unset limit defaulting to the pod's limit
// or the node's allocatable — and the service-link variables of the pod's namespace (unless
// enableServiceLinks is false) and of the default namespace's kubernetes service.
//
// It reads ConfigMaps, Secrets and Services as they are now, which may differ from what the
// kubelet saw when the container started. fileKeyRef (alpha) is not supported: the file lives
// in a volume of the pod. The kubernetes service is left out when it cannot be read (a
// namespace-scoped install may not read the default namespace).
func ResolveEnv(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, container string) (map[string]string, error) {
	c, ok := podContainer(pod, container)
	if !ok {
		return nil, fmt.Errorf("%w: pod %s/%s has no container %q", ErrContainerNotFound, pod.Namespace, pod.Name, container)
	}
	r := &envResolver{
		ctx: ctx, client: client, pod: pod,
		configMaps: make(map[string]*corev1.ConfigMap),
		secrets:    make(map[string]*corev1.Secret),
	}
	serviceEnv, err := r.serviceEnv()
	if err != nil {
		return nil, err
	}

	env := make(map[string]string)
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := r.configMap(from.ConfigMapRef.Name)
			if apierrors.IsNotFound(err) && isTrue(from.ConfigMapRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom: %w", err)
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			s, err := r.secret(from.SecretRef.Name)
			if apierrors.IsNotFound(err) && isTrue(from.SecretRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom: %w", err)
			}
			for k, v := range s.Data {
				env[from.Prefix+k] = string(v)
			}
		}
	}

	// A reference sees the variables defined so far (env grows as the loop goes) and then the
	// service variables.
	lookup := func(name string) (string, bool) {
		if v, ok := env[name]; ok {
			return v, true
		}
		v, ok := serviceEnv[name]
		return v, ok
	}
	for _, ev := range c.Env {
		switch {
		case ev.Value != "":
			env[ev.Name] = expand(ev.Value, lookup)
		case ev.ValueFrom != nil:
			v, ok, err := r.valueFrom(c, ev.ValueFrom)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", ev.Name, err)
			}
			if ok {
				env[ev.Name] = v
			}
		default:
			env[ev.Name] = ""
		}
	}
	// The container's own variables win over service variables of the same name.
	for k, v := range serviceEnv {
		if _, ok := env[k]; !ok {
			env[k] = v
		}
	}
	return env, nil
}

// envResolver caches what one ResolveEnv call reads, as the kubelet reads each object once.
type envResolver struct {
	ctx        context.Context
	client     kubernetes.Interface
	pod        *corev1.Pod
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	node       *corev1.Node
}

func (r *envResolver) configMap(name string) (*corev1.ConfigMap, error) {
	if cm, ok := r.configMaps[name]; ok {
		return cm, nil
	}
	cm, err := r.client.CoreV1().ConfigMaps(r.pod.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get ConfigMap %s/%s: %w", r.pod.Namespace, name, err)
	}
	r.configMaps[name] = cm
	return cm, nil
}

func (r *envResolver) secret(name string) (*corev1.Secret, error) {
	if s, ok := r.secrets[name]; ok {
		return s, nil
	}
	s, err := r.client.CoreV1().Secrets(r.pod.Namespace).Get(r.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get Secret %s/%s: %w", r.pod.Namespace, name, err)
	}
	r.secrets[name] = s
	return s, nil
}

// valueFrom resolves one env source. ok is false for an optional source that is missing.
func (r *envResolver) valueFrom(c *corev1.Container, src *corev1.EnvVarSource) (v string, ok bool, err error) {
	switch {
	case src.FieldRef != nil:
		v, err = podField(r.pod, src.FieldRef)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		v, err = r.resourceField(c, src.ResourceFieldRef)
		return v, err == nil, err
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := r.configMap(ref.Name)
		if apierrors.IsNotFound(err) && isTrue(ref.Optional) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if isTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("%w: key %q not found in ConfigMap %s/%s", ErrEnvSource, ref.Key, r.pod.Namespace, ref.Name)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := r.secret(ref.Name)
		if apierrors.IsNotFound(err) && isTrue(ref.Optional) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if isTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("%w: key %q not found in Secret %s/%s", ErrEnvSource, ref.Key, r.pod.Namespace, ref.Name)
	case src.FileKeyRef != nil:
		return "", false, fmt.Errorf("%w: fileKeyRef reads a file in the pod's volume %q", ErrEnvSource, src.FileKeyRef.VolumeName)
	}
	return "", false, fmt.Errorf("%w: empty valueFrom", ErrEnvSource)
}

// podField answers the downward API's field paths for env vars.
func podField(pod *corev1.Pod, fs *corev1.ObjectFieldSelector) (string, error) {
	if fs.APIVersion != "" && fs.APIVersion != "v1" {
		return "", fmt.Errorf("%w: fieldRef apiVersion %q", ErrEnvSource, fs.APIVersion)
	}
	path := fs.FieldPath
	if field, key, ok := subscript(path); ok {
		switch field {
		case "metadata.labels":
			return pod.Labels[key], nil
		case "metadata.annotations":
			return pod.Annotations[key], nil
		}
		return "", fmt.Errorf("%w: fieldPath %q takes no subscript", ErrEnvSource, path)
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return firstOr(hostIPs(pod), ""), nil
	case "status.hostIPs":
		return strings.Join(hostIPs(pod), ","), nil
	case "status.podIP":
		return firstOr(podIPs(pod), ""), nil
	case "status.podIPs":
		return strings.Join(podIPs(pod), ","), nil
	}
	return "", fmt.Errorf("%w: unsupported fieldPath %q", ErrEnvSource, path)
}

// subscript splits "metadata.labels['app']" into "metadata.labels" and "app".
func subscript(path string) (field, key string, ok bool) {
	rest, ok := strings.CutSuffix(path, "']")
	if !ok {
		return "", "", false
	}
	field, key, ok = strings.Cut(rest, "['")
	return field, key, ok && field != ""
}

// formatMap is the downward API's rendering of labels and annotations: sorted key="value"
// lines with Go-quoted values.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	lines := make([]string, len(keys))
	for i, k := range keys {
		lines[i] = k + "=" + strconv.Quote(m[k])
	}
	return strings.Join(lines, "\n")
}

func podIPs(pod *corev1.Pod) []string {
	var ips []string
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []string{pod.Status.PodIP}
	}
	return ips
}

func hostIPs(pod *corev1.Pod) []string {
	var ips []string
	for _, ip := range pod.Status.HostIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.HostIP != "" {
		ips = []string{pod.Status.HostIP}
	}
	return ips
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

// defaultableLimits are the resources whose unset limit the kubelet fills in from the pod's
// limit or the node's allocatable; huge pages always have a limit.
var defaultableLimits = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}

// resourceField answers a resourceFieldRef: the quantity divided by the divisor (default 1),
// rounded up; CPU is counted in millicores so that a divisor of 1m works.
func (r *envResolver) resourceField(c *corev1.Container, fs *corev1.ResourceFieldSelector) (string, error) {
	if fs.ContainerName != "" {
		var ok bool
		if c, ok = podContainer(r.pod, fs.ContainerName); !ok {
			return "", fmt.Errorf("%w: resourceFieldRef container %q", ErrContainerNotFound, fs.ContainerName)
		}
	}
	kind, name, _ := strings.Cut(fs.Resource, ".")
	res := corev1.ResourceName(name)
	supported := slices.Contains(defaultableLimits, res) || strings.HasPrefix(name, corev1.ResourceHugePagesPrefix)
	if (kind != "limits" && kind != "requests") || !supported {
		return "", fmt.Errorf("%w: unsupported resource %q", ErrEnvSource, fs.Resource)
	}

	var q resource.Quantity
	if kind == "requests" {
		q = c.Resources.Requests[res]
	} else {
		q = c.Resources.Limits[res]
		if q.IsZero() && slices.Contains(defaultableLimits, res) {
			var err error
			if q, err = r.defaultLimit(res); err != nil {
				return "", fmt.Errorf("%s: %w", fs.Resource, err)
			}
		}
	}

	divisor := fs.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	value, per := q.Value(), divisor.Value()
	if res == corev1.ResourceCPU {
		value, per = q.MilliValue(), divisor.MilliValue()
	}
	if per <= 0 {
		return "", fmt.Errorf("%w: divisor %s of %s", ErrEnvSource, divisor.String(), fs.Resource)
	}
	return strconv.FormatInt(ceilDiv(value, per), 10), nil
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return a / b
	}
	return (a + b - 1) / b
}

// defaultLimit is what the kubelet uses for an unset limit: the pod-level limit when there is
// one, otherwise the node's allocatable.
func (r *envResolver) defaultLimit(res corev1.ResourceName) (resource.Quantity, error) {
	if pr := r.pod.Spec.Resources; pr != nil && res != corev1.ResourceEphemeralStorage {
		if q, ok := pr.Limits[res]; ok && !q.IsZero() {
			return q, nil
		}
	}
	if r.node == nil {
		if r.pod.Spec.NodeName == "" {
			return resource.Quantity{}, fmt.Errorf("%w: no limit set and the pod is not on a node yet", ErrEnvSource)
		}
		node, err := r.client.CoreV1().Nodes().Get(r.ctx, r.pod.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			return resource.Quantity{}, fmt.Errorf("no limit set, and the node's allocatable is unknown: get node %s: %w", r.pod.Spec.NodeName, err)
		}
		r.node = node
	}
	return r.node.Status.Allocatable[res], nil
}

// serviceEnv collects the service-link variables the kubelet gives the pod.
func (r *envResolver) serviceEnv() (map[string]string, error) {
	byName := make(map[string]*corev1.Service)
	master, err := r.client.CoreV1().Services(metav1.NamespaceDefault).Get(r.ctx, masterService, metav1.GetOptions{})
	switch {
	case err == nil:
		byName[masterService] = master
	case apierrors.IsNotFound(err) || apierrors.IsForbidden(err):
	default:
		return nil, fmt.Errorf("get service %s/%s: %w", metav1.NamespaceDefault, masterService, err)
	}
	if r.pod.Spec.EnableServiceLinks == nil || *r.pod.Spec.EnableServiceLinks {
		list, err := r.client.CoreV1().Services(r.pod.Namespace).List(r.ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list services in %s: %w", r.pod.Namespace, err)
		}
		for i := range list.Items {
			// A service of the pod's namespace wins over the master service of the same name.
			byName[list.Items[i].Name] = &list.Items[i]
		}
	}
	services := make([]*corev1.Service, 0, len(byName))
	for _, svc := range byName {
		services = append(services, svc)
	}
	// Sorted, so that the rare clash of two services' variable names resolves the same way
	// every time.
	slices.SortFunc(services, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	return serviceLinkEnv(services), nil
}

func podContainer(pod *corev1.Pod, name string) (*corev1.Container, bool) {
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i], true
			}
		}
	}
	return nil, false
}

func isTrue(b *bool) bool { return b != nil && *b }
