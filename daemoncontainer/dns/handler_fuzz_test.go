package dns

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// packetConn is a UDP socket without a network: the first read gets the query, the next one
// fails as a closed socket does (which ends the server once the query is answered), and writes
// are kept.
type packetConn struct {
	query []byte

	mu      sync.Mutex
	read    bool
	got     int // bytes of the query the server read, as a socket truncates to the buffer
	answers [][]byte
}

var clientAddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.read {
		return 0, nil, net.ErrClosed
	}
	c.read = true
	c.got = copy(b, c.query)
	return c.got, clientAddr, nil
}

func (c *packetConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers = append(c.answers, append([]byte(nil), b...))
	return len(b), nil
}

func (c *packetConn) Close() error                     { return nil }
func (c *packetConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (c *packetConn) SetDeadline(time.Time) error      { return nil }
func (c *packetConn) SetReadDeadline(time.Time) error  { return nil }
func (c *packetConn) SetWriteDeadline(time.Time) error { return nil }

// serveOne passes one UDP packet through the server Run uses and returns what the server read of
// it and the answers it wrote. ActivateAndServe returns once the handler is done.
func serveOne(h *handler, packet []byte) (query []byte, answers [][]byte) {
	pc := &packetConn{query: packet}
	_ = udpServer(pc, h).ActivateAndServe() // ends with the closed socket's error
	return packet[:pc.got], pc.answers
}

func fuzzHandler(tb testing.TB) *handler {
	r, err := newRouter("cluster.local", []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:96::/64")})
	if err != nil {
		tb.Fatal(err)
	}
	return &handler{
		ctx:     context.Background(),
		log:     slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug})),
		route:   r,
		cluster: &fakeCluster{},
		// No upstreams: other names get SERVFAIL without leaving the process.
		timeout: time.Second,
	}
}

func packQuery(tb testing.TB, m *miekg.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzServeDNS: any UDP packet to the daemon's DNS server leaves it running (no panic) and gets
// at most one answer, which parses, carries the query's ID and the response bit, and fits the
// client's buffer. Packets that are not queries get nothing, malformed ones FORMERR (or NOTIMP
// for other opcodes), and a well-formed query of one question an answer to that question.
func FuzzServeDNS(f *testing.F) {
	a := new(miekg.Msg).SetQuestion("web.default.svc.cluster.local.", miekg.TypeA)
	aaaa := new(miekg.Msg).SetQuestion("web.default.svc.cluster.local.", miekg.TypeAAAA)
	ptr := new(miekg.Msg).SetQuestion("1.0.96.10.in-addr.arpa.", miekg.TypePTR)
	big := new(miekg.Msg).SetQuestion("big.default.svc.cluster.local.", miekg.TypeA)
	bigEDNS := new(miekg.Msg).SetQuestion("big.default.svc.cluster.local.", miekg.TypeA).SetEdns0(1232, false)
	outside := new(miekg.Msg).SetQuestion("example.com.", miekg.TypeA)
	noQuestion := new(miekg.Msg)
	noQuestion.Id = 7
	two := new(miekg.Msg).SetQuestion("a.cluster.local.", miekg.TypeA)
	two.Question = append(two.Question, miekg.Question{Name: "b.cluster.local.", Qtype: miekg.TypeA, Qclass: miekg.ClassINET})
	for _, m := range []*miekg.Msg{a, aaaa, ptr, big, bigEDNS, outside, noQuestion} {
		f.Add(packQuery(f, m))
	}
	f.Add(packQuery(f, two)) // miekg's Pack keeps both questions
	full := packQuery(f, a)
	f.Add(full[:20]) // cut inside the question
	f.Add(full[:11]) // shorter than a header
	// A label of 64 bytes (the limit is 63) and a name past 255 bytes.
	long := append([]byte(nil), full[:12]...)
	long = append(long, 64)
	long = append(long, strings.Repeat("x", 64)...)
	f.Add(append(long, 0, 0, 1, 0, 1))
	longName := append([]byte(nil), full[:12]...)
	for range 5 {
		longName = append(longName, 63)
		longName = append(longName, strings.Repeat("y", 63)...)
	}
	f.Add(append(longName, 0, 0, 1, 0, 1))

	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, packet []byte) {
		q, answers := serveOne(h, packet)
		if len(answers) > 1 {
			t.Fatalf("%d answers to one query", len(answers))
		}
		if len(q) < 12 || q[2]&0x80 != 0 {
			if len(answers) != 0 {
				t.Fatalf("answered a packet that is not a query: %x", q)
			}
			return
		}
		if len(answers) == 0 {
			t.Fatalf("no answer to %x", q)
		}
		resp := new(miekg.Msg)
		if err := resp.Unpack(answers[0]); err != nil {
			t.Fatalf("answer does not parse: %v\n%x", err, answers[0])
		}
		if id := binary.BigEndian.Uint16(q); resp.Id != id || !resp.Response {
			t.Fatalf("answer ID %d response %v, want ID %d and the response bit", resp.Id, resp.Response, id)
		}

		hdr := miekg.Header{
			Id: binary.BigEndian.Uint16(q), Bits: binary.BigEndian.Uint16(q[2:]), Qdcount: binary.BigEndian.Uint16(q[4:]),
			Ancount: binary.BigEndian.Uint16(q[6:]), Nscount: binary.BigEndian.Uint16(q[8:]), Arcount: binary.BigEndian.Uint16(q[10:]),
		}
		query := new(miekg.Msg)
		perr := query.Unpack(q)
		wantRcode := -1 // an answer: NOERROR or SERVFAIL
		switch miekg.DefaultMsgAcceptFunc(hdr) {
		case miekg.MsgRejectNotImplemented:
			wantRcode = miekg.RcodeNotImplemented
		case miekg.MsgReject:
			wantRcode = miekg.RcodeFormatError
		default:
			if perr != nil || len(query.Question) != 1 {
				wantRcode = miekg.RcodeFormatError
			}
		}
		if wantRcode >= 0 {
			if resp.Rcode != wantRcode || len(resp.Answer) != 0 {
				t.Fatalf("malformed query (%v, %d questions) answered %s with %d records, want %s",
					perr, len(query.Question), miekg.RcodeToString[resp.Rcode], len(resp.Answer), miekg.RcodeToString[wantRcode])
			}
			return
		}
		if resp.Rcode != miekg.RcodeSuccess && resp.Rcode != miekg.RcodeServerFailure {
			t.Fatalf("answer %s to a well-formed query", miekg.RcodeToString[resp.Rcode])
		}
		want := query.Question[0]
		if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, want.Name) ||
			resp.Question[0].Qtype != want.Qtype || resp.Question[0].Qclass != want.Qclass {
			t.Fatalf("answer's question %v, want %v", resp.Question, want)
		}
		if limit := udpSize(query); len(answers[0]) > limit {
			t.Fatalf("%d-byte answer over UDP exceeds the client's %d", len(answers[0]), limit)
		}
	})
}
