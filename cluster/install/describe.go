package install

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"teledock.dev/teledock/internal/registry"
)

// Cluster is what Describe tells about the cluster a Config points at: enough for the CLI to find
// out how its nodes get images.
type Cluster struct {
	Context string // the kubeconfig context's name (Config.Context, or the current one)
	Server  string // the API server's URL
	Nodes   []Node // nil when the user may not list nodes
	// Registry is the local registry the cluster advertises (KEP-1755), nil when none.
	Registry *registry.Hosting
}

// Node is one node as the API server describes it.
type Node struct {
	Name    string
	Runtime string // e.g. containerd://1.7.24
	Arch    string // e.g. amd64
}

// Describe reads the context and server from the kubeconfig and lists the cluster's nodes. Nodes
// are cluster-scoped and many users may not list them: that leaves Nodes empty, not an error.
func Describe(ctx context.Context, cfg Config) (Cluster, error) {
	flags := configFlags(cfg)
	raw, err := flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return Cluster{}, fmt.Errorf("kubeconfig: %w", err)
	}
	c := Cluster{Context: cfg.Context}
	if c.Context == "" {
		c.Context = raw.CurrentContext
	}
	if kc := raw.Contexts[c.Context]; kc != nil {
		if cl := raw.Clusters[kc.Cluster]; cl != nil {
			c.Server = cl.Server
		}
	}
	k8s, err := kubeClient(flags)
	if err != nil {
		return Cluster{}, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c.Nodes = listNodes(ctx, k8s, log)
	switch h, err := registry.LocalHosting(ctx, k8s); {
	case err == nil:
		c.Registry = &h
	case !errors.Is(err, registry.ErrNoHosting):
		log.Debug("reading the cluster's local registry", "err", err)
	}
	return c, nil
}

func listNodes(ctx context.Context, k8s kubernetes.Interface, log *slog.Logger) []Node {
	list, err := k8s.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		log.Debug("listing nodes", "err", err)
		return nil
	}
	nodes := make([]Node, 0, len(list.Items))
	for _, n := range list.Items {
		nodes = append(nodes, Node{
			Name:    n.Name,
			Runtime: n.Status.NodeInfo.ContainerRuntimeVersion,
			Arch:    n.Status.NodeInfo.Architecture,
		})
	}
	return nodes
}
