package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"teledock.dev/teledock/daemoncontainer/launcher"
)

// hostPeers says whether an address may use the API: loopback (the CLI's connections through the
// published port arrive from the host's side of the container's network, handlers in the namespace
// from loopback), a gateway of this namespace's routes (the host's address on each Docker network
// that routes by it: the published port's proxy, the volume plugin in the engine's namespace), and
// the host-gateway name the container is created with. Other containers on the same networks are
// refused. The files are read per call, so networks connected later count.
func hostPeers(routes, hosts string) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		if a.IsLoopback() {
			return true
		}
		return slices.Contains(readWith(routes, routeGateways), a) ||
			slices.Contains(readWith(hosts, func(r io.Reader) []netip.Addr { return hostAddrs(r, launcher.HostGateway) }), a)
	}
}

// readWith parses the file at path with parse; a file that cannot be opened gives nothing.
func readWith(path string, parse func(io.Reader) []netip.Addr) []netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	return parse(f)
}

// routeGateways reads the gateways of /proc/net/route (IPv4, addresses in host byte order as hex).
func routeGateways(r io.Reader) []netip.Addr {
	const rtfGateway = 0x2
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] == "Iface" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&rtfGateway == 0 {
			continue
		}
		b, err := hex.DecodeString(f[2])
		if err != nil || len(b) != 4 {
			continue
		}
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], binary.LittleEndian.Uint32(b))
		out = append(out, netip.AddrFrom4(ip))
	}
	return out
}

// hostAddrs returns the addresses /etc/hosts gives name.
func hostAddrs(r io.Reader, name string) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		for _, n := range f[1:] {
			if strings.EqualFold(n, name) {
				out = append(out, a.Unmap())
				break
			}
		}
	}
	return out
}
