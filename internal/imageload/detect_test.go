package imageload

import (
	"context"
	"slices"
	"testing"

	"github.com/docker/docker/api/types/container"
)

type fakeLister []container.Summary

func (f fakeLister) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return f, nil
}

func ctr(id, name string, labels map[string]string, ports ...container.Port) container.Summary {
	return container.Summary{ID: id, Names: []string{"/" + name}, Labels: labels, Ports: ports}
}

func published(private, public uint16) container.Port {
	return container.Port{IP: "127.0.0.1", PrivatePort: private, PublicPort: public, Type: "tcp"}
}

// engine is a Docker engine with a two-node kind cluster "dev", a k3d cluster "web" (a server, an
// agent and its load balancer), a minikube profile "minikube" and an unrelated container.
var engine = fakeLister{
	ctr("k1", "dev-control-plane", map[string]string{labelKindCluster: "dev", labelKindRole: "control-plane"}, published(6443, 41000)),
	ctr("k2", "dev-worker", map[string]string{labelKindCluster: "dev", labelKindRole: "worker"}),
	ctr("d1", "web-server-0-other", nil, published(6443, 42000)), // not a cluster's
	ctr("t1", "k3d-web-server-0", map[string]string{labelK3dCluster: "web", labelK3dRole: "server"}),
	ctr("t2", "k3d-web-agent-0", map[string]string{labelK3dCluster: "web", labelK3dRole: "agent"}),
	ctr("t3", "k3d-web-serverlb", map[string]string{labelK3dCluster: "web", labelK3dRole: "loadbalancer"}, published(6443, 43000)),
	ctr("m1", "minikube", map[string]string{labelMinikubeName: "minikube", labelMinikubeCreated: "true"}, published(8443, 44000), published(22, 44001)),
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name      string
		target    Target
		want      Type
		wantName  string
		wantNodes []string
		wantLoad  Loader
		wantArch  string
	}{
		{name: "kind", target: Target{Context: "kind-dev", Server: "https://127.0.0.1:41000"},
			want: Kind, wantName: "dev", wantNodes: []string{"dev-control-plane", "dev-worker"}},
		{name: "kind, nodes listed", target: Target{Context: "kind-dev", Server: "https://127.0.0.1:41000",
			Nodes: []NodeInfo{{Name: "dev-control-plane", Runtime: "containerd://2.1.1", Arch: "arm64"}}},
			want: Kind, wantName: "dev", wantNodes: []string{"dev-control-plane"}, wantArch: "arm64"},
		{name: "kind, context renamed but its port", target: Target{Context: "dev", Server: "https://localhost:41000"},
			want: Kind, wantName: "dev", wantNodes: []string{"dev-control-plane", "dev-worker"}},
		{name: "kind, remote server address", target: Target{Context: "kind-dev", Server: "https://172.18.0.2:6443"},
			want: Kind, wantName: "dev", wantNodes: []string{"dev-control-plane", "dev-worker"}},
		{name: "kind name does not match the context", target: Target{Context: "kind-prod", Server: "https://127.0.0.1:45000"},
			want: Unknown},
		{name: "kind context but another port", target: Target{Context: "kind-dev", Server: "https://127.0.0.1:45000"},
			want: Unknown},
		{name: "kind, listed nodes are another cluster's", target: Target{Context: "kind-dev", Server: "https://127.0.0.1:41000",
			Nodes: []NodeInfo{{Name: "prod-control-plane"}}}, want: Unknown},
		{name: "k3d", target: Target{Context: "k3d-web", Server: "https://0.0.0.0:43000"},
			want: K3d, wantName: "web", wantNodes: []string{"k3d-web-server-0", "k3d-web-agent-0"}},
		{name: "minikube, docker runtime by default", target: Target{Context: "minikube", Server: "https://127.0.0.1:44000"},
			want: Minikube, wantName: "minikube", wantNodes: []string{"minikube"}, wantLoad: LoaderDocker},
		{name: "minikube, containerd runtime", target: Target{Context: "minikube", Server: "https://127.0.0.1:44000",
			Nodes: []NodeInfo{{Name: "minikube", Runtime: "containerd://1.7.23"}}},
			want: Minikube, wantName: "minikube", wantNodes: []string{"minikube"}, wantLoad: LoaderCtr},
		{name: "minikube, cri-o takes no archive", target: Target{Context: "minikube", Server: "https://127.0.0.1:44000",
			Nodes: []NodeInfo{{Name: "minikube", Runtime: "cri-o://1.29.1"}}}, want: Unknown},
		{name: "docker desktop by context", target: Target{Context: "docker-desktop", Server: "https://kubernetes.docker.internal:6443"},
			want: DockerDesktop, wantName: "docker-desktop"},
		{name: "docker desktop by node", target: Target{Context: "work", Server: "https://kubernetes.docker.internal:6443",
			Nodes: []NodeInfo{{Name: "docker-desktop", Arch: "arm64"}}}, want: DockerDesktop, wantName: "docker-desktop", wantArch: "arm64"},
		{name: "unknown: a remote cluster", target: Target{Context: "gke_prod", Server: "https://34.1.2.3"}, want: Unknown},
		{name: "unknown: a plain container's port", target: Target{Context: "other", Server: "https://127.0.0.1:42000"}, want: Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(context.Background(), engine, tt.target)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.want || got.Name != tt.wantName || got.Arch != tt.wantArch {
				t.Fatalf("Detect = %s %q arch %q (%s), want %s %q arch %q", got.Type, got.Name, got.Arch, got.Why, tt.want, tt.wantName, tt.wantArch)
			}
			if got.Type == Unknown && got.Why == "" {
				t.Errorf("Unknown without a reason")
			}
			var names []string
			for _, n := range got.Nodes {
				names = append(names, n.Name)
				if n.Loader != tt.wantLoad {
					t.Errorf("node %s: loader %d, want %d", n.Name, n.Loader, tt.wantLoad)
				}
			}
			if !slices.Equal(names, tt.wantNodes) {
				t.Errorf("nodes %v, want %v", names, tt.wantNodes)
			}
		})
	}
}

func TestDetectPortDecides(t *testing.T) {
	// Context kind-dev points at ops's port (a copied or edited kubeconfig): the API server it
	// reaches is ops's, so ops gets the images, not dev.
	two := append(slices.Clone(engine),
		ctr("k9", "ops-control-plane", map[string]string{labelKindCluster: "ops", labelKindRole: "control-plane"}, published(6443, 46000)))
	got, err := Detect(context.Background(), two, Target{Context: "kind-dev", Server: "https://127.0.0.1:46000"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != Kind || got.Name != "ops" {
		t.Errorf("Detect = %s %q (%s); want kind ops: the port decides over a context whose port differs", got.Type, got.Name, got.Why)
	}
}
