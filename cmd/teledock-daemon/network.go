package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/grpc"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/daemon"
	"teledock.dev/teledock/daemoncontainer/dns"
	"teledock.dev/teledock/daemoncontainer/netstack"
	"teledock.dev/teledock/daemoncontainer/session"
	"teledock.dev/teledock/tunnel"
)

// managerDialOptions tunes the gRPC connection to the manager for the tunnel's throughput (HTTP/2
// windows); the tunnel package owns the numbers.
func managerDialOptions() []grpc.DialOption { return tunnel.DialOptions() }

// netStack is the container's network: a TUN device routed to the cluster's subnets, gVisor's
// netstack behind it dialing through the tunnel, and a DNS server that handler containers use
// through the shared resolv.conf.
type netStack struct {
	tun   *netstack.TUN
	stack *netstack.Stack
	dns   *dns.Server
	info  daemon.NetworkInfo
}

func (n *netStack) Info() daemon.NetworkInfo { return n.info }

// Close stops DNS first (queries would otherwise time out against a dead stack), then the stack,
// then the device.
func (n *netStack) Close() error {
	var errs []error
	if n.dns != nil {
		errs = append(errs, n.dns.Close())
	}
	if n.stack != nil {
		errs = append(errs, n.stack.Close())
	}
	if n.tun != nil {
		errs = append(errs, n.tun.Close())
	}
	return errors.Join(errs...)
}

func startNetwork(ctx context.Context, sess *session.Session, cfg networkConfig, log *slog.Logger) (_ network, err error) {
	ci := sess.ClusterInfo()
	if ci == nil {
		return nil, session.ErrNotConnected
	}
	subnets, err := parsePrefixes(append(slices.Clone(ci.GetPodSubnets()), ci.GetServiceSubnets()...))
	if err != nil {
		return nil, err
	}
	domain := strings.TrimSuffix(ci.GetClusterDomain(), ".")
	if domain == "" {
		domain = "cluster.local"
	}

	n := &netStack{}
	// Undo what was built when a later step fails.
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()

	if n.tun, err = netstack.OpenTUN(cfg.tunName, cfg.mtu); err != nil {
		return nil, fmt.Errorf("open tun %s: %w", cfg.tunName, err)
	}
	if err = n.tun.AddRoutes(subnets...); err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	// Every flow the stack accepts becomes one tunnel: a raw tunnel on the direct port for TCP
	// when it can, a Tunnel stream otherwise. The session is read per dial so that flows opened
	// after a re-arrival use the new one.
	dial := func(ctx context.Context, network string, dst netip.AddrPort) (netstack.Conn, error) {
		if tunnel.ProtocolOf(network) == managerv1.Protocol_PROTOCOL_TCP {
			c, err := sess.DialRaw(ctx, dst)
			if err == nil {
				return c, nil
			}
			if !errors.Is(err, session.ErrNoRaw) {
				return nil, err
			}
		}
		c, err := tunnel.Dial(ctx, sess.Manager(), sess.SessionID(), network, dst)
		if err != nil {
			// Not `return tunnel.Dial(...)`: a nil *tunnel.Conn would become a non-nil Conn.
			return nil, err
		}
		return c, nil
	}
	if n.stack, err = netstack.New(netstack.Config{FD: n.tun.FD(), MTU: cfg.mtu, Dial: dial}, log.With("part", "netstack")); err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}

	// The container's own resolv.conf (Docker's copy of the host's) gives the upstreams for names
	// outside the cluster; it is then rewritten to point at our server. Handler containers that
	// join the namespace bind-mount the same file.
	upstreams, origSearch, err := dns.ReadResolvConf(cfg.resolvConf)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", cfg.resolvConf, err)
	}
	// The cluster's search path first (as in a pod of the namespace), then the host's.
	search := append([]string{cfg.namespace + ".svc." + domain, "svc." + domain, domain}, origSearch...)
	if n.dns, err = dns.New(dns.Config{
		ListenAddr:    cfg.dnsListen,
		ClusterDomain: domain,
		ReverseZones:  subnets,
		Upstreams:     upstreamAddrs(upstreams),
		Cluster:       sess,
		Timeout:       cfg.dnsTimeout,
	}, log.With("part", "dns")); err != nil {
		return nil, fmt.Errorf("dns server: %w", err)
	}
	go func() {
		if err := n.dns.Run(ctx); err != nil {
			log.Error("dns server stopped", "err", err)
		}
	}()
	listen, err := netip.ParseAddrPort(cfg.dnsListen)
	if err != nil {
		return nil, fmt.Errorf("dns listen address: %w", err)
	}
	if err = dns.WriteResolvConf(cfg.resolvConf, listen.Addr().String(), search, 5, cfg.dnsTimeout); err != nil {
		return nil, fmt.Errorf("write %s: %w", cfg.resolvConf, err)
	}

	n.info = daemon.NetworkInfo{ResolverAddress: cfg.dnsListen, SearchPath: search, Timeout: cfg.dnsTimeout}
	return n, nil
}

func parsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("cluster subnet %q: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// upstreamAddrs gives resolv.conf nameservers a port.
func upstreamAddrs(nameservers []string) []string {
	out := make([]string, 0, len(nameservers))
	for _, ns := range nameservers {
		out = append(out, net.JoinHostPort(ns, "53"))
	}
	return out
}
