package dns

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	miekg "github.com/miekg/dns"
)

// router decides which names belong to the cluster. It routes by suffix only: the stub resolver's
// search path (see WriteResolvConf) expands short names like "svc.ns" before they get here.
type router struct {
	domain string         // lower case, fully qualified: "cluster.local."
	zones  []netip.Prefix // masked, IPv4 unmapped
}

func newRouter(domain string, zones []netip.Prefix) (*router, error) {
	domain = strings.Trim(strings.ToLower(domain), ".")
	if domain == "" {
		return nil, errors.New("dns: empty cluster domain")
	}
	r := &router{domain: domain + "."}
	for _, z := range zones {
		if !z.IsValid() {
			return nil, errors.New("dns: invalid reverse zone")
		}
		r.zones = append(r.zones, unmap(z))
	}
	return r, nil
}

// toCluster reports whether name is the cluster domain, a name under it, or the reverse name of
// an address or subnet inside one of the reverse zones.
func (r *router) toCluster(name string) bool {
	name = strings.ToLower(miekg.Fqdn(name))
	if name == r.domain || strings.HasSuffix(name, "."+r.domain) {
		return true
	}
	p, ok := reversePrefix(name)
	return ok && r.inZones(p)
}

// inZones reports whether all of p lies in one zone. A broader reverse name (10.in-addr.arpa for
// a 10.96.0.0/12 zone) covers addresses outside the cluster, so it stays upstream.
func (r *router) inZones(p netip.Prefix) bool {
	for _, z := range r.zones {
		if z.Bits() <= p.Bits() && z.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// reversePrefix turns a reverse-lookup name into the prefix it covers:
// "1.0.96.10.in-addr.arpa." is 10.96.0.1/32, "96.10.in-addr.arpa." is 10.96.0.0/16, and
// ip6.arpa names cover 4 bits per nibble label. ok is false for any other name.
func reversePrefix(name string) (p netip.Prefix, ok bool) {
	if rest, found := strings.CutSuffix(name, ".in-addr.arpa."); found {
		labels := strings.Split(rest, ".")
		if len(labels) > 4 {
			return netip.Prefix{}, false
		}
		var a [4]byte
		for i, l := range labels {
			n, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Prefix{}, false
			}
			a[len(labels)-1-i] = byte(n) // the last label is the first octet
		}
		return netip.PrefixFrom(netip.AddrFrom4(a), 8*len(labels)), true
	}
	if rest, found := strings.CutSuffix(name, ".ip6.arpa."); found {
		nibbles := strings.Split(rest, ".")
		if len(nibbles) > 32 {
			return netip.Prefix{}, false
		}
		var a [16]byte
		for i, l := range nibbles {
			if len(l) != 1 {
				return netip.Prefix{}, false
			}
			v, err := strconv.ParseUint(l, 16, 8)
			if err != nil {
				return netip.Prefix{}, false
			}
			pos := len(nibbles) - 1 - i // nibble index counted from the most significant
			if pos%2 == 0 {
				a[pos/2] |= byte(v) << 4
			} else {
				a[pos/2] |= byte(v)
			}
		}
		return netip.PrefixFrom(netip.AddrFrom16(a), 4*len(nibbles)), true
	}
	return netip.Prefix{}, false
}

// unmap turns an IPv4-mapped IPv6 prefix (::ffff:10.96.0.0/108) into its IPv4 form (10.96.0.0/12),
// masked.
func unmap(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() {
		return netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0)).Masked()
	}
	return p.Masked()
}
