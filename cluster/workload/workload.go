// Package workload finds the Deployments, ReplicaSets and StatefulSets that teledock intercepts
// and their pods, and rolls them out so that their pods get (or lose) the traffic-agent.
package workload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The kinds of workload that can be intercepted.
const (
	KindDeployment  = "Deployment"
	KindReplicaSet  = "ReplicaSet"
	KindStatefulSet = "StatefulSet"
)

// Kinds lists the kinds in the order Get tries them.
var Kinds = []string{KindDeployment, KindReplicaSet, KindStatefulSet}

// ErrNotFound means there is no workload of that name (or kind) in the namespace.
var ErrNotFound = errors.New("workload not found")

// Workload is what teledock needs of a Deployment, ReplicaSet or StatefulSet.
type Workload struct {
	Kind      string
	Name      string
	Namespace string
	UID       types.UID
	Template  corev1.PodTemplateSpec
	Selector  labels.Selector
	// Replicas is the desired number of pods.
	Replicas int32
	// RollsOut says whether the controller replaces the pods when the template changes.
	// ReplicaSets never do, nor do StatefulSets with the OnDelete update strategy: their pods
	// must be deleted to be replaced.
	RollsOut bool
}

func (w Workload) String() string { return fmt.Sprintf("%s %s/%s", w.Kind, w.Namespace, w.Name) }

// Get finds the workload named name: a Deployment, else a ReplicaSet that no Deployment
// controls, else a StatefulSet.
func Get(ctx context.Context, c kubernetes.Interface, namespace, name string) (Workload, error) {
	for _, kind := range Kinds {
		w, err := GetKind(ctx, c, kind, namespace, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		return w, err
	}
	return Workload{}, fmt.Errorf("%w: no Deployment, ReplicaSet or StatefulSet named %q in namespace %s", ErrNotFound, name, namespace)
}

// GetKind gets the workload of the kind and name. A ReplicaSet controlled by a Deployment is not
// a workload of its own: its Deployment is.
func GetKind(ctx context.Context, c kubernetes.Interface, kind, namespace, name string) (Workload, error) {
	var (
		w   Workload
		err error
	)
	switch kind {
	case KindDeployment:
		var d *appsv1.Deployment
		if d, err = c.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			w, err = fromDeployment(d)
		}
	case KindReplicaSet:
		var rs *appsv1.ReplicaSet
		if rs, err = c.AppsV1().ReplicaSets(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			if ownedByDeployment(rs) {
				return Workload{}, fmt.Errorf("%w: ReplicaSet %s/%s belongs to a Deployment", ErrNotFound, namespace, name)
			}
			w, err = fromReplicaSet(rs)
		}
	case KindStatefulSet:
		var s *appsv1.StatefulSet
		if s, err = c.AppsV1().StatefulSets(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			w, err = fromStatefulSet(s)
		}
	default:
		return Workload{}, fmt.Errorf("%w: kind %q is not Deployment, ReplicaSet or StatefulSet", ErrNotFound, kind)
	}
	if apierrors.IsNotFound(err) {
		return Workload{}, fmt.Errorf("%w: %s %s/%s", ErrNotFound, kind, namespace, name)
	}
	if err != nil {
		return Workload{}, fmt.Errorf("get %s %s/%s: %w", kind, namespace, name, err)
	}
	return w, nil
}

// List lists the namespace's workloads ("" for every namespace), sorted by name and kind.
func List(ctx context.Context, c kubernetes.Interface, namespace string) ([]Workload, error) {
	var out []Workload
	deps, err := c.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	for i := range deps.Items {
		if w, err := fromDeployment(&deps.Items[i]); err == nil {
			out = append(out, w)
		}
	}
	rss, err := c.AppsV1().ReplicaSets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list replicasets: %w", err)
	}
	for i := range rss.Items {
		if ownedByDeployment(&rss.Items[i]) {
			continue
		}
		if w, err := fromReplicaSet(&rss.Items[i]); err == nil {
			out = append(out, w)
		}
	}
	sts, err := c.AppsV1().StatefulSets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list statefulsets: %w", err)
	}
	for i := range sts.Items {
		if w, err := fromStatefulSet(&sts.Items[i]); err == nil {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b Workload) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return slices.Index(Kinds, a.Kind) - slices.Index(Kinds, b.Kind)
	})
	return out, nil
}

func ownedByDeployment(rs *appsv1.ReplicaSet) bool {
	owner := metav1.GetControllerOf(rs)
	return owner != nil && owner.Kind == KindDeployment
}

func fromDeployment(d *appsv1.Deployment) (Workload, error) {
	return build(KindDeployment, d.ObjectMeta, d.Spec.Template, d.Spec.Selector, d.Spec.Replicas, true)
}

func fromReplicaSet(rs *appsv1.ReplicaSet) (Workload, error) {
	return build(KindReplicaSet, rs.ObjectMeta, rs.Spec.Template, rs.Spec.Selector, rs.Spec.Replicas, false)
}

func fromStatefulSet(s *appsv1.StatefulSet) (Workload, error) {
	rolls := s.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType
	return build(KindStatefulSet, s.ObjectMeta, s.Spec.Template, s.Spec.Selector, s.Spec.Replicas, rolls)
}

func build(kind string, meta metav1.ObjectMeta, tmpl corev1.PodTemplateSpec, sel *metav1.LabelSelector, replicas *int32, rollsOut bool) (Workload, error) {
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return Workload{}, fmt.Errorf("%s %s/%s: selector: %w", kind, meta.Namespace, meta.Name, err)
	}
	n := int32(1) // the API's default
	if replicas != nil {
		n = *replicas
	}
	return Workload{
		Kind: kind, Name: meta.Name, Namespace: meta.Namespace, UID: meta.UID,
		Template: tmpl, Selector: selector, Replicas: n, RollsOut: rollsOut,
	}, nil
}

// Pods returns the workload's pods, oldest first: those its selector matches and that it
// controls (a Deployment through its ReplicaSets). Pods being deleted are left out.
func Pods(ctx context.Context, c kubernetes.Interface, w Workload) ([]corev1.Pod, error) {
	all, err := AllPods(ctx, c, w)
	return slices.DeleteFunc(all, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil }), err
}

// AllPods is Pods with the pods being deleted, which may still be serving.
func AllPods(ctx context.Context, c kubernetes.Interface, w Workload) ([]corev1.Pod, error) {
	owners := map[types.UID]bool{w.UID: true}
	if w.Kind == KindDeployment {
		rss, err := c.AppsV1().ReplicaSets(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: w.Selector.String()})
		if err != nil {
			return nil, fmt.Errorf("%s: list replicasets: %w", w, err)
		}
		owners = make(map[types.UID]bool)
		for _, rs := range rss.Items {
			if o := metav1.GetControllerOf(&rs); o != nil && o.UID == w.UID {
				owners[rs.UID] = true
			}
		}
	}
	pods, err := c.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: w.Selector.String()})
	if err != nil {
		return nil, fmt.Errorf("%s: list pods: %w", w, err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if o := metav1.GetControllerOf(&p); o != nil && owners[o.UID] {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// Ref names a workload within a namespace.
type Ref struct{ Kind, Name string }

// PodsByWorkload lists the namespace's pods, except those being deleted, grouped by the workload
// that controls them (a Deployment's pods under the Deployment).
func PodsByWorkload(ctx context.Context, c kubernetes.Interface, namespace string) (map[Ref][]corev1.Pod, error) {
	rss, err := c.AppsV1().ReplicaSets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list replicasets: %w", err)
	}
	rsOwner := make(map[types.UID]Ref, len(rss.Items))
	for _, rs := range rss.Items {
		ref := Ref{KindReplicaSet, rs.Name}
		if o := metav1.GetControllerOf(&rs); o != nil && o.Kind == KindDeployment {
			ref = Ref{KindDeployment, o.Name}
		}
		rsOwner[rs.UID] = ref
	}
	pods, err := c.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := make(map[Ref][]corev1.Pod)
	for _, p := range pods.Items {
		o := metav1.GetControllerOf(&p)
		if o == nil || p.DeletionTimestamp != nil {
			continue
		}
		switch o.Kind {
		case KindReplicaSet:
			if ref, ok := rsOwner[o.UID]; ok {
				out[ref] = append(out[ref], p)
			}
		case KindStatefulSet:
			ref := Ref{KindStatefulSet, o.Name}
			out[ref] = append(out[ref], p)
		}
	}
	return out, nil
}
