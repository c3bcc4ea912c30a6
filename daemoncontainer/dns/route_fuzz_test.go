package dns

import (
	"strings"
	"testing"
)

// FuzzReversePrefix: any query name is either not a reverse name or covers a prefix whose own
// reverse name (as far as its labels go) is the query's.
func FuzzReversePrefix(f *testing.F) {
	for _, s := range []string{"1.0.96.10.in-addr.arpa.", "96.10.in-addr.arpa.", "in-addr.arpa.", ".in-addr.arpa.",
		"256.1.1.1.in-addr.arpa.", "1.2.3.4.5.in-addr.arpa.", "b.a.9.8.ip6.arpa.", "ab.ip6.arpa.", "example.com.", "-1.in-addr.arpa."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, ok := reversePrefix(name)
		if !ok {
			return
		}
		if !p.IsValid() {
			t.Fatalf("%q: invalid prefix %v", name, p)
		}
		v4 := strings.HasSuffix(name, ".in-addr.arpa.")
		if v4 != p.Addr().Is4() {
			t.Fatalf("%q: family of %v", name, p)
		}
		if p.Bits() > p.Addr().BitLen() {
			t.Fatalf("%q: %v longer than its address", name, p)
		}
		if p.Masked() != p {
			t.Fatalf("%q: %v has bits past its length", name, p)
		}
	})
}
