// Package imageload brings teledock's images to where a cluster's nodes find them without a
// registry: the local Docker engine (Docker Desktop's Kubernetes shares its image store), or the
// containerd or Docker inside the node containers of kind, k3d and minikube on that engine.
package imageload

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
)

// Type is how a cluster gets images; the zero value, Unknown, means teledock does nothing and the
// nodes must pull them (a registry case can be added here).
type Type int

const (
	Unknown       Type = iota
	Kind               // kind: node containers, containerd
	K3d                // k3d: node containers, k3s's containerd
	Minikube           // minikube's docker driver: node containers, Docker or containerd inside
	DockerDesktop      // Docker Desktop's Kubernetes: the engine's own image store
)

func (t Type) String() string {
	switch t {
	case Kind:
		return "kind"
	case K3d:
		return "k3d"
	case Minikube:
		return "minikube"
	case DockerDesktop:
		return "docker-desktop"
	}
	return "unknown"
}

// Lister is the part of the Docker API that Detect uses.
type Lister interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
}

// Target is the cluster a command installs to, as the kubeconfig and the API server tell.
type Target struct {
	Context string // the kubeconfig context's name
	Server  string // the API server's URL
	// Nodes are the cluster's nodes; empty when they could not be listed.
	Nodes []NodeInfo
}

// NodeInfo is what the API server says about a node.
type NodeInfo struct {
	Name    string
	Runtime string // status.nodeInfo.containerRuntimeVersion, e.g. containerd://1.7.24, docker://28.0.1
	Arch    string // status.nodeInfo.architecture, e.g. amd64
}

// Loader is how images get into one node.
type Loader int

const (
	LoaderCtr    Loader = iota // `ctr -n k8s.io images import -` in the node
	LoaderDocker               // `docker load` in the node (minikube with the Docker runtime)
)

// Node is a node container on the local engine.
type Node struct {
	Container string // the container's ID
	Name      string // the container's name, which is also the Kubernetes node's
	Loader    Loader
}

// Cluster is Detect's answer: how the target gets images, and for node containers, which.
type Cluster struct {
	Type  Type
	Name  string // the cluster's (or minikube profile's) name
	Nodes []Node // for Kind, K3d and Minikube
	Arch  string // the nodes' architecture when the API server said it, else ""
	// Why explains an Unknown answer, for the debug log.
	Why string
}

// Labels that kind, k3d and minikube put on their containers.
const (
	labelKindCluster     = "io.x-k8s.kind.cluster"
	labelKindRole        = "io.x-k8s.kind.role"
	labelK3dCluster      = "k3d.cluster"
	labelK3dRole         = "k3d.role"
	labelMinikubeName    = "name.minikube.sigs.k8s.io"
	labelMinikubeCreated = "created_by.minikube.sigs.k8s.io"
)

// candidate is one local cluster found on the engine.
type candidate struct {
	typ        Type
	name       string
	context    string   // the context name its tool writes
	apiPort    string   // the container port of the API server (or its load balancer)
	nodes      []Node   // the containers that are nodes
	containers []string // all its containers' IDs, load balancers too, for the API port check
}

// Detect tells how the target gets images. Docker Desktop is told by its context or node name;
// kind, k3d and minikube by their node containers on the local engine, matched to the target by
// the context name their tool writes or by the API server's published port, and, when the API
// server listed its nodes, by node name. Anything else is Unknown.
func Detect(ctx context.Context, docker Lister, t Target) (Cluster, error) {
	arch := nodesArch(t.Nodes)
	if t.Context == "docker-desktop" || slices.ContainsFunc(t.Nodes, func(n NodeInfo) bool { return n.Name == "docker-desktop" }) {
		return Cluster{Type: DockerDesktop, Name: "docker-desktop", Arch: arch}, nil
	}
	list, err := docker.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return Cluster{}, fmt.Errorf("list containers: %w", err)
	}
	cands := candidates(list, t)
	serverPort, portKnown := loopbackPort(t.Server)
	var matched []*candidate
	for _, c := range cands {
		byPort := portKnown && publishes(list, c, serverPort)
		if c.context == t.Context && (!portKnown || byPort) || byPort {
			matched = append(matched, c)
		}
	}
	switch len(matched) {
	case 0:
		return Cluster{Why: fmt.Sprintf("no kind, k3d or minikube cluster on the local engine matches context %s (%s)", t.Context, t.Server)}, nil
	case 1:
	default:
		return Cluster{Why: fmt.Sprintf("%d local clusters match context %s", len(matched), t.Context)}, nil
	}
	c := matched[0]
	nodes := c.nodes
	if len(t.Nodes) > 0 {
		// Only containers that are the target's nodes: another cluster's are never touched.
		nodes = slices.DeleteFunc(slices.Clone(nodes), func(n Node) bool {
			return !slices.ContainsFunc(t.Nodes, func(i NodeInfo) bool { return i.Name == n.Name })
		})
	}
	if len(nodes) == 0 {
		return Cluster{Why: fmt.Sprintf("%s cluster %s: none of its containers is a node of context %s", c.typ, c.name, t.Context)}, nil
	}
	for i := range nodes {
		loader, ok := loaderFor(c.typ, runtimeOf(t.Nodes, nodes[i].Name))
		if !ok {
			return Cluster{Why: fmt.Sprintf("%s node %s: runtime %s takes no image archive", c.typ, nodes[i].Name, runtimeOf(t.Nodes, nodes[i].Name))}, nil
		}
		nodes[i].Loader = loader
	}
	return Cluster{Type: c.typ, Name: c.name, Nodes: nodes, Arch: arch}, nil
}

// candidates groups the engine's containers into kind, k3d and minikube clusters.
func candidates(list []container.Summary, t Target) []*candidate {
	byKey := map[string]*candidate{}
	var out []*candidate
	add := func(typ Type, name, context, apiPort string, id string, node Node, isNode bool) {
		key := typ.String() + "/" + name
		c := byKey[key]
		if c == nil {
			c = &candidate{typ: typ, name: name, context: context, apiPort: apiPort}
			byKey[key] = c
			out = append(out, c)
		}
		c.containers = append(c.containers, id)
		if isNode {
			c.nodes = append(c.nodes, node)
		}
	}
	for _, s := range list {
		node := Node{Container: s.ID, Name: containerName(s)}
		switch {
		case s.Labels[labelKindCluster] != "":
			name := s.Labels[labelKindCluster]
			role := s.Labels[labelKindRole]
			add(Kind, name, "kind-"+name, "6443", s.ID, node, role == "control-plane" || role == "worker")
		case s.Labels[labelK3dCluster] != "":
			name := s.Labels[labelK3dCluster]
			role := s.Labels[labelK3dRole]
			add(K3d, name, "k3d-"+name, "6443", s.ID, node, role == "server" || role == "agent")
		case s.Labels[labelMinikubeName] != "" && s.Labels[labelMinikubeCreated] == "true":
			name := s.Labels[labelMinikubeName]
			add(Minikube, name, name, "8443", s.ID, node, true)
		}
	}
	return out
}

// publishes reports whether one of c's containers publishes its API server port on hostPort.
func publishes(list []container.Summary, c *candidate, hostPort uint16) bool {
	for _, s := range list {
		if !slices.Contains(c.containers, s.ID) {
			continue
		}
		for _, p := range s.Ports {
			if strconv.Itoa(int(p.PrivatePort)) == c.apiPort && p.PublicPort == hostPort {
				return true
			}
		}
	}
	return false
}

// loopbackPort is the API server's port when its host is this machine's (where a published port
// is what it reaches).
func loopbackPort(server string) (uint16, bool) {
	u, err := url.Parse(server)
	if err != nil || u.Port() == "" {
		return 0, false
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !(ip.IsLoopback() || ip.IsUnspecified())) {
		return 0, false
	}
	p, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil {
		return 0, false
	}
	return uint16(p), true
}

func containerName(s container.Summary) string {
	if len(s.Names) == 0 {
		return s.ID
	}
	return strings.TrimPrefix(s.Names[0], "/")
}

func runtimeOf(nodes []NodeInfo, name string) string {
	for _, n := range nodes {
		if n.Name == name {
			return n.Runtime
		}
	}
	return ""
}

// loaderFor picks how to load into a node from its runtime as the API server reports it; an
// unknown runtime gets the tool's default.
func loaderFor(typ Type, runtime string) (Loader, bool) {
	scheme, _, _ := strings.Cut(runtime, "://")
	switch {
	case scheme == "containerd":
		return LoaderCtr, true
	case scheme == "docker":
		return LoaderDocker, true
	case runtime != "":
		return 0, false // cri-o and the like
	case typ == Minikube:
		return LoaderDocker, true // minikube's default runtime
	}
	return LoaderCtr, true
}

func nodesArch(nodes []NodeInfo) string {
	for _, n := range nodes {
		if n.Arch != "" {
			return n.Arch
		}
	}
	return ""
}
