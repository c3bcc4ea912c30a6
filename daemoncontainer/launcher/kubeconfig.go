package launcher

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// HostGateway is the name under which the daemon container reaches the host; the launcher maps it
// with --add-host host.docker.internal:host-gateway, which Docker 20.10 and newer understand.
const HostGateway = "host.docker.internal"

var (
	// ErrNoContext: no --context and no current-context in the kubeconfig (or no kubeconfig at all).
	ErrNoContext = errors.New("no current kubeconfig context")
	// ErrContextNotFound: the requested context is not in the kubeconfig.
	ErrContextNotFound = errors.New("kubeconfig context not found")
	// ErrInvalidKubeconfig: the kubeconfig cannot be read or does not describe a usable cluster.
	ErrInvalidKubeconfig = errors.New("invalid kubeconfig")
	// ErrExecCredentials: the context gets its credentials from a program (exec or auth-provider
	// plugin), which does not exist inside the daemon container's FROM-scratch image.
	ErrExecCredentials = errors.New("kubeconfig credentials come from a plugin program")
)

// KubeconfigOptions select the cluster the way kubectl's flags do.
type KubeconfigOptions struct {
	Path      string // --kubeconfig; "" means $KUBECONFIG, then ~/.kube/config
	Context   string // --context; "" means the current context
	Namespace string // --namespace; "" means the context's namespace, then "default"
}

// Kubeconfig is a kubeconfig prepared for the daemon container: one context, certificates and keys
// embedded, and API servers on the host's loopback reached through the host gateway.
type Kubeconfig struct {
	Data      []byte // the kubeconfig file for the container
	Context   string
	Namespace string
	// Server is the API server URL as the user's kubeconfig says; ContainerServer is what the
	// container uses (they differ when the server was on a loopback address).
	Server          string
	ContainerServer string
}

// PrepareKubeconfig loads the kubeconfig, picks the context and makes it usable inside the daemon
// container. Errors wrap ErrNoContext, ErrContextNotFound, ErrInvalidKubeconfig or
// ErrExecCredentials.
func PrepareKubeconfig(opts KubeconfigOptions) (*Kubeconfig, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if opts.Path != "" {
		// clientcmd flattens a missing file into a text error; check first to keep fs.ErrNotExist.
		if _, err := os.Stat(opts.Path); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidKubeconfig, err)
		}
		rules.ExplicitPath = opts.Path
	}
	raw, err := rules.Load()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKubeconfig, err)
	}
	return prepare(raw, opts)
}

func prepare(raw *clientcmdapi.Config, opts KubeconfigOptions) (*Kubeconfig, error) {
	name := opts.Context
	if name == "" {
		name = raw.CurrentContext
	}
	if name == "" {
		return nil, ErrNoContext
	}
	kctx, ok := raw.Contexts[name]
	if !ok {
		names := make([]string, 0, len(raw.Contexts))
		for n := range raw.Contexts {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("%w: %q (the kubeconfig has: %s)", ErrContextNotFound, name, strings.Join(names, ", "))
	}
	raw.CurrentContext = name
	if err := clientcmdapi.MinifyConfig(raw); err != nil {
		return nil, fmt.Errorf("%w: context %q: %w", ErrInvalidKubeconfig, name, err)
	}
	// Certificates and keys referenced by path would not exist in the container.
	if err := clientcmdapi.FlattenConfig(raw); err != nil {
		return nil, fmt.Errorf("%w: embed certificates: %w", ErrInvalidKubeconfig, err)
	}
	kctx = raw.Contexts[name]
	cluster := raw.Clusters[kctx.Cluster]
	if cluster == nil {
		// MinifyConfig checks a named cluster exists, but lets a context name none.
		return nil, fmt.Errorf("%w: context %q names no cluster", ErrInvalidKubeconfig, name)
	}
	auth := raw.AuthInfos[kctx.AuthInfo]
	if auth != nil && (auth.Exec != nil || auth.AuthProvider != nil) {
		return nil, fmt.Errorf("%w: context %q, user %q", ErrExecCredentials, name, kctx.AuthInfo)
	}

	ns := opts.Namespace
	if ns == "" {
		ns = kctx.Namespace
	}
	if ns == "" {
		ns = "default"
	}
	kctx.Namespace = ns

	server := cluster.Server
	if err := reachFromContainer(cluster); err != nil {
		return nil, fmt.Errorf("%w: cluster %q: %w", ErrInvalidKubeconfig, kctx.Cluster, err)
	}
	// Building a client config catches what would only fail inside the container: a missing
	// server, unreadable certificate data.
	if _, err := clientcmd.NewDefaultClientConfig(*raw, nil).ClientConfig(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKubeconfig, err)
	}
	data, err := clientcmd.Write(*raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKubeconfig, err)
	}
	return &Kubeconfig{Data: data, Context: name, Namespace: ns, Server: server, ContainerServer: cluster.Server}, nil
}

// reachFromContainer points a cluster on the host's loopback at the host gateway: inside the
// container, 127.0.0.1 is the container itself. The certificate was issued for the original name,
// so that name becomes tls-server-name and verification still checks it (unless the kubeconfig
// already names one, or skips verification anyway).
func reachFromContainer(c *clientcmdapi.Cluster) error {
	u, err := url.Parse(c.Server)
	if err != nil {
		return fmt.Errorf("server %q: %w", c.Server, err)
	}
	if u.Host == "" {
		return fmt.Errorf("server %q has no host", c.Server)
	}
	host := u.Hostname()
	if !isLoopback(host) {
		return nil
	}
	if port := u.Port(); port != "" {
		u.Host = net.JoinHostPort(HostGateway, port)
	} else {
		u.Host = HostGateway
	}
	c.Server = u.String()
	if c.TLSServerName == "" && !c.InsecureSkipTLSVerify && u.Scheme == "https" {
		c.TLSServerName = host
	}
	return nil
}

// isLoopback reports whether host names this machine's loopback: "localhost" and its subdomains
// (RFC 6761 reserves them), 127.0.0.0/8, ::1 and IPv4-mapped loopback.
func isLoopback(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	addr, err := netip.ParseAddr(h)
	return err == nil && addr.Unmap().IsLoopback()
}

// ContextInfo is one context of a kubeconfig, as `teledock contexts` lists it.
type ContextInfo struct {
	Name      string `json:"name"`
	Cluster   string `json:"cluster"`
	Server    string `json:"server,omitempty"`
	Namespace string `json:"namespace,omitempty"` // the context's own; empty means "default"
	Current   bool   `json:"current,omitempty"`
}

// Contexts lists the contexts of the kubeconfig at path ("" as kubectl: $KUBECONFIG, then
// ~/.kube/config), sorted by name.
func Contexts(path string) ([]ContextInfo, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidKubeconfig, err)
		}
		rules.ExplicitPath = path
	}
	raw, err := rules.Load()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKubeconfig, err)
	}
	out := make([]ContextInfo, 0, len(raw.Contexts))
	for name, c := range raw.Contexts {
		ci := ContextInfo{Name: name, Cluster: c.Cluster, Namespace: c.Namespace, Current: name == raw.CurrentContext}
		if cl := raw.Clusters[c.Cluster]; cl != nil {
			ci.Server = cl.Server
		}
		out = append(out, ci)
	}
	slices.SortFunc(out, func(a, b ContextInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
