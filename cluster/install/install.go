// Package install installs, upgrades and uninstalls the traffic-manager with Helm's SDK and the
// chart embedded in the binary.
package install

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
)

const (
	// DefaultRelease is the Helm release name when Config.Release is empty.
	DefaultRelease = "traffic-manager"
	// DefaultTimeout bounds the wait for the manager to be ready when Config.Timeout is zero.
	DefaultTimeout = 2 * time.Minute

	// deploymentName is the chart's Deployment (templates/deployment.yaml).
	deploymentName = "traffic-manager"
	// maxHistory keeps Helm's release secrets from piling up over many upgrades.
	maxHistory = 5
)

// Keys on a namespace that Install created, so that Uninstall deletes only namespaces it owns.
const (
	LabelManagedBy        = "app.kubernetes.io/managed-by"
	AnnotationCreatedFor  = "teledock.dev/created-for-release"
	managedByTeledock     = "teledock"
	helmReleaseStorageKey = "secret" // Helm's default storage driver: release secrets in the namespace
)

// ErrNotReady means the manager did not become ready before the deadline; the error text says why
// as far as the pods tell (image missing, crash loop, unschedulable...).
var ErrNotReady = errors.New("traffic-manager not ready")

// Config says where and what to install.
type Config struct {
	// Kubeconfig is the kubeconfig file; empty means kubectl's rules ($KUBECONFIG, ~/.kube/config).
	Kubeconfig string
	// Context is the kubeconfig context; empty means the current one.
	Context string
	// Namespace is the release's namespace, created if missing. Required.
	Namespace string
	// Release is the Helm release name; empty means DefaultRelease.
	Release string
	// Version becomes the chart's version and appVersion, and so the default image tag; empty keeps
	// the chart's own.
	Version string
	// Values override the chart's values.yaml, e.g. {"image": {"tag": "dev"}}.
	Values map[string]any
	// Timeout bounds the wait for readiness (and, on Uninstall, for deletion). Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Events receives progress; nil drops it.
	Events EventFunc
	// Log receives Helm's debug output; nil drops it.
	Log *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Namespace == "" {
		return c, errors.New("install: no namespace")
	}
	if c.Release == "" {
		c.Release = DefaultRelease
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Events == nil {
		c.Events = func(Event) {}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// clients are what Install and Uninstall talk to the cluster with.
type clients struct {
	helm *action.Configuration
	k8s  kubernetes.Interface
}

func configFlags(cfg Config) *genericclioptions.ConfigFlags {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &cfg.Kubeconfig
	flags.Context = &cfg.Context
	flags.Namespace = &cfg.Namespace
	return flags
}

func kubeClient(flags *genericclioptions.ConfigFlags) (kubernetes.Interface, error) {
	rc, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	k8s, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return k8s, nil
}

func newClients(cfg Config) (*clients, error) {
	flags := configFlags(cfg)
	k8s, err := kubeClient(flags)
	if err != nil {
		return nil, err
	}
	helm := new(action.Configuration)
	debug := func(format string, v ...any) {
		if cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
			cfg.Log.Debug(fmt.Sprintf(format, v...), "component", "helm")
		}
	}
	if err := helm.Init(flags, cfg.Namespace, helmReleaseStorageKey, debug); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return &clients{helm: helm, k8s: k8s}, nil
}

// Install installs the traffic-manager, or upgrades it when the release exists, and waits until its
// Deployment is ready. It is idempotent: running it again with the same Config changes nothing but
// the release's revision.
func Install(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	chrt, err := loadChart(cfg.Version)
	if err != nil {
		return err
	}
	c, err := newClients(cfg)
	if err != nil {
		return err
	}
	if err := ensureNamespace(ctx, c.k8s, cfg); err != nil {
		return err
	}

	_, err = action.NewHistory(c.helm).Run(cfg.Release)
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		cfg.Events(Event{Kind: EventInstalling, Namespace: cfg.Namespace, Release: cfg.Release})
		in := action.NewInstall(c.helm)
		in.ReleaseName = cfg.Release
		in.Namespace = cfg.Namespace
		in.Timeout = cfg.Timeout
		rel, err := in.RunWithContext(ctx, chrt, cfg.Values)
		if err != nil {
			return fmt.Errorf("helm install %s: %w", cfg.Release, err)
		}
		cfg.Events(Event{Kind: EventApplied, Namespace: cfg.Namespace, Release: cfg.Release, Revision: rel.Version})
	case err != nil:
		return fmt.Errorf("helm history %s: %w", cfg.Release, err)
	default:
		cfg.Events(Event{Kind: EventUpgrading, Namespace: cfg.Namespace, Release: cfg.Release})
		up := action.NewUpgrade(c.helm)
		up.Namespace = cfg.Namespace
		up.Timeout = cfg.Timeout
		up.MaxHistory = maxHistory
		// The values are always the chart's plus cfg.Values, never the last release's: the result
		// must not depend on what was installed before.
		up.ResetValues = true
		rel, err := up.RunWithContext(ctx, cfg.Release, chrt, cfg.Values)
		if err != nil {
			return fmt.Errorf("helm upgrade %s: %w", cfg.Release, err)
		}
		cfg.Events(Event{Kind: EventApplied, Namespace: cfg.Namespace, Release: cfg.Release, Revision: rel.Version})
	}

	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	return waitReady(wctx, c.k8s, cfg.Namespace, deploymentName, time.Second, func(e Event) {
		e.Release = cfg.Release
		cfg.Events(e)
	})
}

// ensureNamespace creates the release's namespace when it does not exist and marks it as created
// for this release.
func ensureNamespace(ctx context.Context, k8s kubernetes.Interface, cfg Config) error {
	_, err := k8s.CoreV1().Namespaces().Get(ctx, cfg.Namespace, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get namespace %s: %w", cfg.Namespace, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        cfg.Namespace,
		Labels:      map[string]string{LabelManagedBy: managedByTeledock},
		Annotations: map[string]string{AnnotationCreatedFor: cfg.Release},
	}}
	if _, err := k8s.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", cfg.Namespace, err)
	}
	cfg.Events(Event{Kind: EventNamespaceCreated, Namespace: cfg.Namespace, Release: cfg.Release})
	return nil
}

// Uninstall removes the release and waits for its objects to go; then it deletes the namespace if
// Install created it for this release. It is idempotent: a missing release is not an error.
func Uninstall(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	c, err := newClients(cfg)
	if err != nil {
		return err
	}
	cfg.Events(Event{Kind: EventUninstalling, Namespace: cfg.Namespace, Release: cfg.Release})
	un := action.NewUninstall(c.helm)
	un.IgnoreNotFound = true
	un.Wait = true
	un.Timeout = cfg.Timeout
	if _, err := un.Run(cfg.Release); err != nil {
		return fmt.Errorf("helm uninstall %s: %w", cfg.Release, err)
	}
	cfg.Events(Event{Kind: EventUninstalled, Namespace: cfg.Namespace, Release: cfg.Release})

	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	return deleteOwnNamespace(wctx, c.k8s, cfg, time.Second)
}

// deleteOwnNamespace deletes the namespace if Install created it for this release, and waits until
// it is gone so that an Install right after does not meet a terminating namespace.
func deleteOwnNamespace(ctx context.Context, k8s kubernetes.Interface, cfg Config, poll time.Duration) error {
	ns, err := k8s.CoreV1().Namespaces().Get(ctx, cfg.Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", cfg.Namespace, err)
	}
	if ns.Annotations[AnnotationCreatedFor] != cfg.Release {
		return nil // not ours: someone else created it, or another release did
	}
	uid := ns.UID
	err = k8s.CoreV1().Namespaces().Delete(ctx, cfg.Namespace, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", cfg.Namespace, err)
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		_, err := k8s.CoreV1().Namespaces().Get(ctx, cfg.Namespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cfg.Events(Event{Kind: EventNamespaceDeleted, Namespace: cfg.Namespace, Release: cfg.Release})
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s still terminating: %w", cfg.Namespace, context.Cause(ctx))
		case <-t.C:
		}
	}
}
