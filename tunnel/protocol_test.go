package tunnel

import (
	"testing"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

func TestNetworkAndProtocol(t *testing.T) {
	for _, tc := range []struct {
		network string
		proto   managerv1.Protocol
	}{
		{"tcp", managerv1.Protocol_PROTOCOL_TCP},
		{"udp", managerv1.Protocol_PROTOCOL_UDP},
	} {
		if got := NetworkOf(tc.proto); got != tc.network {
			t.Errorf("NetworkOf(%v) = %q, want %q", tc.proto, got, tc.network)
		}
		for _, n := range []string{tc.network, tc.network + "4", tc.network + "6"} {
			if got := ProtocolOf(n); got != tc.proto {
				t.Errorf("ProtocolOf(%q) = %v, want %v", n, got, tc.proto)
			}
		}
	}
	if got := NetworkOf(managerv1.Protocol_PROTOCOL_UNSPECIFIED); got != "" {
		t.Errorf("NetworkOf(unspecified) = %q, want none", got)
	}
	if got := NetworkOf(managerv1.Protocol(99)); got != "" {
		t.Errorf("NetworkOf(99) = %q, want none", got)
	}
	for _, n := range []string{"", "ip", "unix", "TCP"} {
		if got := ProtocolOf(n); got != managerv1.Protocol_PROTOCOL_UNSPECIFIED {
			t.Errorf("ProtocolOf(%q) = %v, want unspecified", n, got)
		}
	}
}
