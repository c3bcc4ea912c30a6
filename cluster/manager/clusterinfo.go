package manager

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// Prefix lengths of the subnets guessed around addresses when the cluster does not say.
// IPv6: a /64 is what a node's pod range usually is; /108 is the largest service range the API
// server accepts for IPv6.
const (
	guessPod4, guessPod6 = 16, 64
	guessSvc4, guessSvc6 = 16, 108
)

// ClusterInfo tells the client which subnets to route into the cluster and which DNS it uses.
// It reads the cluster on each call (clients call it once per connection), so new nodes show up.
func (m *Manager) ClusterInfo(ctx context.Context, req *managerv1.SessionRequest) (*managerv1.ClusterInfoResponse, error) {
	if _, err := m.session(req.GetSessionId()); err != nil {
		return nil, err
	}
	pods, err := m.podSubnets(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "pod subnets: %v", err)
	}
	svcs, err := m.serviceSubnets(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "service subnets: %v", err)
	}
	dns, err := m.dnsServer(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cluster DNS: %v", err)
	}
	return &managerv1.ClusterInfoResponse{
		PodSubnets:       prefixStrings(pods),
		ServiceSubnets:   prefixStrings(svcs),
		ClusterDomain:    m.clusterDomain(),
		DnsIp:            dns.Addr().String(),
		ManagerNamespace: m.cfg.Namespace,
	}, nil
}

// podSubnets returns the nodes' .spec.podCIDRs. Some CNI plugins (Calico, Cilium in cluster-pool
// mode) allocate pod addresses without filling podCIDRs; then it covers the IPs of the running pods
// with /16s (IPv4) or /64s (IPv6), which may miss a range no pod uses yet.
func (m *Manager) podSubnets(ctx context.Context) ([]netip.Prefix, error) {
	var out []netip.Prefix
	nodes, nodeErr := m.k8s.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if nodeErr == nil {
		for _, n := range nodes.Items {
			cidrs := n.Spec.PodCIDRs
			if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
				cidrs = []string{n.Spec.PodCIDR}
			}
			for _, c := range cidrs {
				if p, err := netip.ParsePrefix(c); err == nil {
					out = append(out, p.Masked())
				}
			}
		}
	}
	if len(out) > 0 {
		return mergePrefixes(out), nil
	}

	pods, err := m.k8s.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, errors.Join(nodeErr, fmt.Errorf("list pods: %w", err))
	}
	var ips []netip.Addr
	for _, p := range pods.Items {
		if p.Spec.HostNetwork {
			continue // its IP is the node's, not a pod network's
		}
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				ips = append(ips, a)
			}
		}
	}
	return cover(ips, guessPod4, guessPod6), nil
}

// serviceSubnets returns the ServiceCIDR objects' ranges (networking.k8s.io/v1, Kubernetes 1.33+).
// On older clusters it falls back to /16s (IPv4) or /108s (IPv6) around the ClusterIPs of the
// `default/kubernetes` service and every other service, a guess that covers every existing service
// but not necessarily the whole range. (Creating a Service with an impossible clusterIP and reading
// the range from the error message would be exact, but it parses an error string and needs create
// rights, so it is not done.)
func (m *Manager) serviceSubnets(ctx context.Context) ([]netip.Prefix, error) {
	var out []netip.Prefix
	cidrs, cidrErr := m.k8s.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	if cidrErr == nil {
		for _, sc := range cidrs.Items {
			for _, c := range sc.Spec.CIDRs {
				if p, err := netip.ParsePrefix(c); err == nil {
					out = append(out, p.Masked())
				}
			}
		}
	}
	if len(out) > 0 {
		return mergePrefixes(out), nil
	}
	if cidrErr != nil {
		m.log.Debug("no ServiceCIDRs, guessing service subnets from ClusterIPs", "error", cidrErr)
	}

	svcs, err := m.k8s.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, errors.Join(cidrErr, fmt.Errorf("list services: %w", err))
	}
	var ips []netip.Addr
	for _, s := range svcs.Items {
		ips = append(ips, clusterIPs(&s)...)
	}
	if len(ips) == 0 {
		return nil, errors.New("no ServiceCIDR and no service with a ClusterIP")
	}
	return cover(ips, guessSvc4, guessSvc6), nil
}

func clusterIPs(s *corev1.Service) []netip.Addr {
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil { // skips "None" (headless)
			out = append(out, a)
		}
	}
	return out
}

// clusterDomain takes the domain from the search path of a pod's resolv.conf, whose entries are
// NAMESPACE.svc.DOMAIN, svc.DOMAIN and DOMAIN.
func (m *Manager) clusterDomain() string {
	for _, s := range m.cfg.ResolvConf.Search {
		if d, ok := strings.CutPrefix(s, "svc."); ok && d != "" {
			return d
		}
		if _, d, ok := strings.Cut(s, ".svc."); ok && d != "" {
			return d
		}
	}
	return "cluster.local"
}

// cover returns the prefixes of the given lengths that contain addrs, without duplicates.
func cover(addrs []netip.Addr, bits4, bits6 int) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		bits := bits4
		if a.Is6() {
			bits = bits6
		}
		p, err := a.Prefix(bits)
		if err == nil {
			out = append(out, p)
		}
	}
	return mergePrefixes(out)
}

// mergePrefixes sorts prefixes (IPv4 first) and drops those contained in another.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	out := ps[:0]
	for _, p := range ps {
		// Sorted by address then length, a prefix containing p comes before it, and the last kept
		// prefix is the only one that can: kept prefixes do not overlap each other.
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
