package manager

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// query builds a wire-format query for an A record of name (dot-separated, no trailing dot).
func query(id uint16, name string) []byte {
	q := binary.BigEndian.AppendUint16(nil, id)
	q = append(q, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD; QDCOUNT=1
	for _, l := range bytes.Split([]byte(name), []byte(".")) {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	return append(q, 0, 0, 1, 0, 1) // root; QTYPE=A; QCLASS=IN
}

// answer turns a query into a response with one A record (TTL 5) per address.
func answer(q []byte, truncated bool, addrs ...[4]byte) []byte {
	a := append([]byte(nil), q...)
	a[2] |= 0x80 // QR
	if truncated {
		a[2] |= dnsTCBit
		return a
	}
	binary.BigEndian.PutUint16(a[6:], uint16(len(addrs)))
	for _, ip := range addrs {
		a = append(a, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4)
		a = append(a, ip[:]...)
	}
	return a
}

// fakeDNS serves on one loopback port over UDP and TCP. Over UDP it answers "big.test" with a
// truncated answer (as a server does when the answer exceeds 512 bytes), so the client must retry
// over TCP, and it first sends a stray answer with another ID to check that it is ignored.
type fakeDNS struct {
	addr     string
	tcpCount chan struct{}
}

func startFakeDNS(tb testing.TB) *fakeDNS {
	tb.Helper()
	var tl net.Listener
	var pc net.PacketConn
	for range 10 {
		var err error
		if tl, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			tb.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp", tl.Addr().String()); err == nil {
			break
		}
		tl.Close()
	}
	if pc == nil {
		tb.Fatal("no port free for both UDP and TCP")
	}
	f := &fakeDNS{addr: tl.Addr().String(), tcpCount: make(chan struct{}, 10)}
	tb.Cleanup(func() {
		tl.Close()
		pc.Close()
	})
	big := [][4]byte{{10, 0, 0, 1}, {10, 0, 0, 2}}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			stray := answer(q, false, [4]byte{6, 6, 6, 6})
			stray[0] ^= 0xff
			pc.WriteTo(stray, from)
			pc.WriteTo(answer(q, bytes.Contains(q, []byte("\x03big")), [4]byte{10, 0, 0, 9}), from)
		}
	}()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			f.tcpCount <- struct{}{}
			go func() {
				defer c.Close()
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				a := answer(q, false, big...)
				c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...))
			}()
		}
	}()
	return f
}

func TestLookupDNS(t *testing.T) {
	dns := startFakeDNS(t)
	m := newManager(t, Config{DNSServer: dns.addr})
	id := arrive(t, m)
	tests := []struct {
		name    string
		query   []byte
		want    []byte
		wantTCP bool
		wantErr codes.Code
	}{
		{
			name:  "udp",
			query: query(0x1234, "web.default.svc.cluster.local"),
			want:  answer(query(0x1234, "web.default.svc.cluster.local"), false, [4]byte{10, 0, 0, 9}),
		},
		{
			name:    "truncated over udp, retried over tcp",
			query:   query(0x4321, "big.default.svc.cluster.local"),
			want:    answer(query(0x4321, "big.default.svc.cluster.local"), false, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}),
			wantTCP: true,
		},
		{name: "too short", query: []byte{1, 2, 3}, wantErr: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := m.LookupDNS(ctx, &managerv1.DNSRequest{SessionId: id, Query: tt.query})
			if status.Code(err) != tt.wantErr {
				t.Fatalf("LookupDNS: %v, want code %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if !bytes.Equal(got.GetAnswer(), tt.want) {
				t.Errorf("answer\n got %x\nwant %x", got.GetAnswer(), tt.want)
			}
			usedTCP := len(dns.tcpCount) > 0
			for len(dns.tcpCount) > 0 {
				<-dns.tcpCount
			}
			if usedTCP != tt.wantTCP {
				t.Errorf("used TCP: %v, want %v", usedTCP, tt.wantTCP)
			}
		})
	}
}

func TestLookupDNSUnanswered(t *testing.T) {
	// A UDP socket that never answers.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	m := newManager(t, Config{DNSServer: pc.LocalAddr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = m.LookupDNS(ctx, &managerv1.DNSRequest{SessionId: arrive(t, m), Query: query(1, "x.cluster.local")})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("LookupDNS to a silent server: %v, want DeadlineExceeded", err)
	}
}
