package main

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

// resolveAddress turns --address into the IP the daemon delivers to: an IP as given, or a
// container's IP on a Docker network it shares with the daemon container (the daemon dials from
// its own network namespace, so only such an address is reachable).
func resolveAddress(ctx context.Context, docker dockerAPI, daemonContainer, value string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(value); err == nil {
		return ip, nil
	}
	target, err := docker.ContainerInspect(ctx, value)
	switch {
	case cerrdefs.IsNotFound(err):
		return netip.Addr{}, fmt.Errorf("%w %s: neither an IP address nor a container", errBadAddress, value)
	case err != nil:
		return netip.Addr{}, fmt.Errorf("--address %s: inspect container: %w", value, err)
	}
	daemon, err := docker.ContainerInspect(ctx, daemonContainer)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("--address %s: inspect container %s: %w", value, daemonContainer, err)
	}
	return containerAddress(target, daemon)
}

// containerAddress picks target's IP on a network it shares with the daemon container.
func containerAddress(target, daemon container.InspectResponse) (netip.Addr, error) {
	name := strings.TrimPrefix(target.Name, "/")
	if target.State == nil || !target.State.Running {
		return netip.Addr{}, fmt.Errorf("%w: container %s is not running", errBadAddress, name)
	}
	// A container in the daemon's network namespace (`teledock run`) listens on its 127.0.0.1.
	if target.HostConfig != nil {
		if mode := string(target.HostConfig.NetworkMode); mode == "container:"+daemon.ID || mode == "container:"+strings.TrimPrefix(daemon.Name, "/") {
			return netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
		}
	}
	targetNets, daemonNets := networks(target), networks(daemon)
	daemonIDs := map[string]bool{}
	for _, ep := range daemonNets {
		if ep != nil && ep.NetworkID != "" {
			daemonIDs[ep.NetworkID] = true
		}
	}
	for _, netName := range slices.Sorted(maps.Keys(targetNets)) {
		ep := targetNets[netName]
		// By ID when Docker reports it; by name otherwise (the names are the same on one engine).
		shared := ep != nil && (daemonIDs[ep.NetworkID] || ep.NetworkID == "" && daemonNets[netName] != nil)
		if !shared || ep.IPAddress == "" {
			continue
		}
		ip, err := netip.ParseAddr(ep.IPAddress)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%w: container %s: address %q on network %s", errBadAddress, name, ep.IPAddress, netName)
		}
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("%w: container %s is on %s, the daemon container %s on %s",
		errAddressNetwork, name, networkList(targetNets), strings.TrimPrefix(daemon.Name, "/"), networkList(daemonNets))
}

func networks(c container.InspectResponse) map[string]*network.EndpointSettings {
	if c.NetworkSettings == nil {
		return nil
	}
	return c.NetworkSettings.Networks
}

func networkList(nets map[string]*network.EndpointSettings) string {
	if len(nets) == 0 {
		return "no network"
	}
	return "network " + strings.Join(slices.Sorted(maps.Keys(nets)), ", ")
}
