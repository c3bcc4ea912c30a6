package main

import (
	"strconv"
	"strings"
	"testing"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// FuzzParsePort: --port is refused, or gives a local port in range and a service port that is a
// port number or name, and the same value parses the same way when written back.
func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"", "8080", "8080:http", "8080:80", "0", "8080:", ":80", "70000:http", "8080:HTTP", "1:a-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		local, svc, err := parsePort(s)
		if err != nil || s == "" {
			return
		}
		if local == 0 {
			t.Fatalf("%q: local port 0", s)
		}
		if n, nerr := strconv.Atoi(svc); nerr == nil && (n < 1 || n > 65535) {
			t.Fatalf("%q: service port %d out of range", s, n)
		}
		back := strconv.Itoa(int(local))
		if svc != "" {
			back += ":" + svc
		}
		if l2, s2, err := parsePort(back); err != nil || l2 != local || s2 != svc {
			t.Fatalf("%q -> %q parses as %d %q %v", s, back, l2, s2, err)
		}
	})
}

// FuzzParseToPod: --to-pod is refused, or is one port in range with TCP or UDP.
func FuzzParseToPod(f *testing.F) {
	for _, s := range []string{"8081", "53/udp", "53/UDP", "80/tcp", "0", "80/sctp", "/udp", "65535/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := parseToPod(s)
		if err != nil {
			return
		}
		if tp.GetPort() < 1 || tp.GetPort() > 65535 {
			t.Fatalf("%q: port %d", s, tp.GetPort())
		}
		proto := "TCP"
		if tp.GetProtocol() == managerv1.Protocol_PROTOCOL_UDP {
			proto = "UDP"
		} else if tp.GetProtocol() != managerv1.Protocol_PROTOCOL_TCP {
			t.Fatalf("%q: protocol %v", s, tp.GetProtocol())
		}
		port, p, hasProto := strings.Cut(s, "/")
		if n, err := strconv.Atoi(port); err != nil || int32(n) != tp.GetPort() || (hasProto && !strings.EqualFold(p, proto)) {
			t.Fatalf("%q accepted as %d/%s", s, tp.GetPort(), proto)
		}
	})
}
