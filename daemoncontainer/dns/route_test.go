package dns

import (
	"net/netip"
	"testing"

	miekg "github.com/miekg/dns"
)

func TestReversePrefix(t *testing.T) {
	tests := []struct {
		name string
		want string // "" when not a reverse name
	}{
		{name: "1.0.96.10.in-addr.arpa.", want: "10.96.0.1/32"},
		{name: "96.10.in-addr.arpa.", want: "10.96.0.0/16"},
		{name: "10.in-addr.arpa.", want: "10.0.0.0/8"},
		{name: "in-addr.arpa."},
		{name: "1.1.0.96.10.in-addr.arpa."},
		{name: "256.96.10.in-addr.arpa."},
		{name: "x.96.10.in-addr.arpa."},
		{name: reverse("fd00:96::1"), want: "fd00:96::1/128"},
		{name: "6.9.0.0.0.0.d.f.ip6.arpa.", want: "fd00:96::/32"},
		{name: "d.f.ip6.arpa.", want: "fd00::/8"},
		{name: "dd.f.ip6.arpa."},
		{name: "g.f.ip6.arpa."},
		{name: "example.com."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := reversePrefix(tt.name)
			got := ""
			if ok {
				got = p.String()
			}
			if got != tt.want {
				t.Errorf("reversePrefix = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRouterToCluster(t *testing.T) {
	r, err := newRouter(".Cluster.Local.", []netip.Prefix{
		netip.MustParsePrefix("10.96.0.0/12"),
		netip.MustParsePrefix("10.244.0.0/16"),
		netip.MustParsePrefix("::ffff:172.20.0.0/112"), // a mapped zone counts as IPv4
		netip.MustParsePrefix("fd00:96::/64"),
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want bool
	}{
		{name: "web.default.svc.cluster.local.", want: true},
		{name: "web.default.svc.cluster.local", want: true},
		{name: "CLUSTER.LOCAL.", want: true},
		{name: "local.", want: false},
		{name: "xcluster.local.", want: false},
		{name: "1.0.96.10.in-addr.arpa.", want: true},
		{name: "1.0.111.10.in-addr.arpa.", want: true},
		{name: "1.0.112.10.in-addr.arpa.", want: false},
		{name: "97.10.in-addr.arpa.", want: true},
		{name: "10.in-addr.arpa.", want: false},
		{name: "5.3.244.10.in-addr.arpa.", want: true},
		{name: "1.0.20.172.in-addr.arpa.", want: true},
		{name: "1.0.21.172.in-addr.arpa.", want: false},
		{name: reverse("fd00:96::1"), want: true},
		{name: reverse("fd00:96::ffff:ffff:ffff:ffff"), want: true},
		{name: reverse("fd00:97::1"), want: false},
		{name: "google.com.", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.toCluster(tt.name); got != tt.want {
				t.Errorf("toCluster = %v, want %v", got, tt.want)
			}
		})
	}
}

// reverse is the reverse-lookup name of addr, written by miekg rather than by the code under test.
func reverse(addr string) string {
	name, err := miekg.ReverseAddr(addr)
	if err != nil {
		panic(err)
	}
	return name
}

func TestUnmap(t *testing.T) {
	tests := []struct{ in, want string }{
		{in: "::ffff:172.20.0.0/112", want: "172.20.0.0/16"},
		{in: "::ffff:10.96.0.1/108", want: "10.96.0.0/12"},
		{in: "10.96.3.0/12", want: "10.96.0.0/12"},
		{in: "fd00:96::1/64", want: "fd00:96::/64"},
	}
	for _, tt := range tests {
		if got := unmap(netip.MustParsePrefix(tt.in)).String(); got != tt.want {
			t.Errorf("unmap(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
