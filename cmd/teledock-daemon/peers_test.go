package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const procRoute = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010011AC	0003	0	0	0	00000000	0	0	0
eth0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
eth1	0000A8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
tun0	00006000	00000000	0001	0	0	0	0000FFFF	0	0	0
eth1	0001A8C0	FE01A8C0	0003	0	0	0	00FFFFFF	0	0	0
`

func TestRouteGateways(t *testing.T) {
	got := routeGateways(strings.NewReader(procRoute))
	want := []netip.Addr{netip.MustParseAddr("172.17.0.1"), netip.MustParseAddr("192.168.1.254")}
	if !slices.Equal(got, want) {
		t.Errorf("gateways = %v, want %v", got, want)
	}
}

func TestHostPeers(t *testing.T) {
	dir := t.TempDir()
	routes, hosts := filepath.Join(dir, "route"), filepath.Join(dir, "hosts")
	if err := os.WriteFile(routes, []byte(procRoute), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost\n172.17.0.5\tdaemon # itself\n10.0.0.9 other HOST.docker.internal\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	allow := hostPeers(routes, hosts)
	for addr, want := range map[string]bool{
		"127.0.0.1":     true,
		"::1":           true,
		"172.17.0.1":    true,  // the default route's gateway: the host's side of the bridge
		"192.168.1.254": true,  // a gateway of another network
		"10.0.0.9":      true,  // host.docker.internal
		"172.17.0.3":    false, // another container on the bridge
		"172.17.0.5":    false,
		"192.168.1.1":   false,
	} {
		if got := allow(netip.MustParseAddr(addr)); got != want {
			t.Errorf("allow(%s) = %v, want %v", addr, got, want)
		}
	}
	// Without the files (not in a container), only loopback.
	none := hostPeers(filepath.Join(dir, "nope"), filepath.Join(dir, "nope"))
	if none(netip.MustParseAddr("172.17.0.1")) || !none(netip.MustParseAddr("127.0.0.1")) {
		t.Error("without route and hosts files only loopback may connect")
	}
}
