package manager

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// FuzzLookupDNS: whatever a client sends as a query, LookupDNS refuses it as InvalidArgument (no
// room for a header) or forwards it unchanged and returns the cluster DNS's answer unchanged, over
// TCP when the UDP answer was truncated. The manager reads nothing of the query but its length and
// ID, so nothing else may make it fail or panic.
func FuzzLookupDNS(f *testing.F) {
	f.Add(query(1, "web.default.svc.cluster.local"))
	f.Add(query(2, "big.default.svc.cluster.local"))
	f.Add([]byte{1, 2, 3})
	f.Add(make([]byte, dnsHeaderLen))
	f.Add(query(3, "web")[:dnsHeaderLen+3])
	dns := startFakeDNS(f)
	// A lease longer than any fuzzing run: the session must not expire between inputs.
	m := newManager(f, Config{DNSServer: dns.addr, Lease: 24 * time.Hour})
	id := arrive(f, m)
	f.Fuzz(func(t *testing.T, q []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := m.LookupDNS(ctx, &managerv1.DNSRequest{SessionId: id, Query: q})
		usedTCP := false
		for len(dns.tcpCount) > 0 { // the fake blocks once this is full
			<-dns.tcpCount
			usedTCP = true
		}
		if len(q) < dnsHeaderLen {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%d-byte query: %v, want InvalidArgument", len(q), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("LookupDNS(%x): %v", q, err)
		}
		// The fake truncates over UDP what names "big", and echoes the query's own TC bit.
		wantTCP := bytes.Contains(q, []byte("\x03big")) || q[2]&dnsTCBit != 0
		want := answer(q, false, [4]byte{10, 0, 0, 9})
		if wantTCP {
			want = answer(q, false, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2})
		}
		if !bytes.Equal(got.GetAnswer(), want) || usedTCP != wantTCP {
			t.Fatalf("query %x (TCP %v)\n got %x\nwant %x", q, usedTCP, got.GetAnswer(), want)
		}
	})
}
