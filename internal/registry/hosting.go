// Package registry gets teledock's images into a container registry that a cluster pulls from: it
// reads where a local cluster says its registry is (KEP-1755's local-registry-hosting ConfigMap),
// finds the user's Docker credentials for a registry, and pushes through the Docker engine.
package registry

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Hosting is a cluster's local registry as KEP-1755 describes it.
type Hosting struct {
	// Host is where to push from the developer's machine, e.g. "localhost:5001".
	Host string `json:"host"`
	// HostFromContainerRuntime is how the nodes' container runtime names the same registry; empty
	// means Host.
	HostFromContainerRuntime string `json:"hostFromContainerRuntime"`
	HostFromClusterNetwork   string `json:"hostFromClusterNetwork"`
	Help                     string `json:"help"`
}

// PullHost is the registry host that image references in pod specs must name.
func (h Hosting) PullHost() string {
	if h.HostFromContainerRuntime != "" {
		return h.HostFromContainerRuntime
	}
	return h.Host
}

// ErrNoHosting means the cluster advertises no local registry.
var ErrNoHosting = errors.New("the cluster advertises no local registry")

const (
	hostingNamespace = "kube-public"
	hostingName      = "local-registry-hosting"
	hostingKey       = "localRegistryHosting.v1"
)

// LocalHosting reads the cluster's local-registry-hosting ConfigMap. It returns ErrNoHosting when
// the ConfigMap or its v1 entry is absent (or cannot be read: kube-public is readable by everyone
// where it exists, so a refusal means the same as absence).
func LocalHosting(ctx context.Context, k kubernetes.Interface) (Hosting, error) {
	cm, err := k.CoreV1().ConfigMaps(hostingNamespace).Get(ctx, hostingName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		return Hosting{}, ErrNoHosting
	case err != nil:
		return Hosting{}, fmt.Errorf("read %s/%s: %w", hostingNamespace, hostingName, err)
	}
	doc, ok := cm.Data[hostingKey]
	if !ok {
		return Hosting{}, ErrNoHosting
	}
	return ParseHosting(doc)
}

// ParseHosting parses the localRegistryHosting.v1 document.
func ParseHosting(doc string) (Hosting, error) {
	var h Hosting
	if err := yaml.Unmarshal([]byte(doc), &h); err != nil {
		return Hosting{}, fmt.Errorf("%s in %s/%s: %w", hostingKey, hostingNamespace, hostingName, err)
	}
	if h.Host == "" {
		return Hosting{}, fmt.Errorf("%s in %s/%s names no host", hostingKey, hostingNamespace, hostingName)
	}
	return h, nil
}
