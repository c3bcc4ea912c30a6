package inject

import (
	"strings"
	"testing"

	"teledock.dev/teledock/agent/agentconfig"
)

// FuzzParseInjectPorts: any annotation value is refused with ErrBadAnnotation or gives refs that
// each name one port, by a number in 1-65535 or a valid name, with TCP, UDP or no protocol.
func FuzzParseInjectPorts(f *testing.F) {
	for _, s := range []string{"http", "8080", "http,9090/UDP", "53/udp, dns", "", ",", "0", "65536", "http/SCTP", "a-very-long-port-name"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		refs, err := ParseInjectPorts("inject-container-ports", value)
		if err != nil {
			if refs != nil {
				t.Errorf("%q: refs %v with error %v", value, refs, err)
			}
			return
		}
		if len(refs) == 0 {
			t.Fatalf("%q: accepted with no port", value)
		}
		seen := map[PortRef]bool{}
		for _, r := range refs {
			if seen[r] {
				t.Errorf("%q: %v twice", value, r)
			}
			seen[r] = true
			if (r.Number == 0) == (r.Name == "") {
				t.Errorf("%q: %+v names no port, or two", value, r)
			}
			if r.Name != "" && (len(r.Name) > 15 || strings.ToLower(r.Name) != r.Name || !strings.Contains(value, r.Name)) {
				t.Errorf("%q: bad name %q", value, r.Name)
			}
			if r.Protocol != "" && r.Protocol != agentconfig.TCP && r.Protocol != agentconfig.UDP {
				t.Errorf("%q: protocol %q", value, r.Protocol)
			}
		}
	})
}
