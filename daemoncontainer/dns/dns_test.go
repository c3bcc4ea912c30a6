package dns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", p)
	return len(p), nil
}

// Answers of the two fakes, so a test can tell who answered.
var (
	clusterIP  = net.IPv4(10, 96, 0, 10)
	upstreamIP = net.IPv4(192, 0, 2, 1)
)

// fakeCluster is the cluster resolver behind the manager's LookupDNS: it answers every A query
// with clusterIP, or with n copies for names starting with "big", and records the names asked.
type fakeCluster struct {
	err     error // returned instead of an answer when set
	garbage bool  // answer bytes that are not a DNS message

	mu    sync.Mutex
	names []string
}

func (c *fakeCluster) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	q := new(miekg.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.names = append(c.names, q.Question[0].Name)
	c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	if c.garbage {
		return []byte{1, 2, 3}, nil
	}
	resp := new(miekg.Msg).SetReply(q)
	// A different ID than the query's: the server must put the client's back.
	resp.Id = q.Id + 1
	n := 1
	if strings.HasPrefix(q.Question[0].Name, "big") {
		n = 100
	}
	for i := range n {
		ip := slices.Clone(clusterIP.To4())
		ip[3] += byte(i)
		resp.Answer = append(resp.Answer, &miekg.A{
			Hdr: miekg.RR_Header{Name: q.Question[0].Name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: 5},
			A:   ip,
		})
	}
	return resp.Pack()
}

func (c *fakeCluster) asked() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.names)
}

// fakeUpstream is a nameserver on 127.0.0.1 (UDP and TCP) that answers every query with
// upstreamIP and records the names asked.
type fakeUpstream struct {
	addr string

	mu    sync.Mutex
	names []string
}

func startUpstream(tb testing.TB) *fakeUpstream {
	tb.Helper()
	u := &fakeUpstream{}
	udp, tcp, err := listen("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	u.addr = udp.LocalAddr().String()
	for _, srv := range []*miekg.Server{{PacketConn: udp, Net: "udp", Handler: u}, {Listener: tcp, Net: "tcp", Handler: u}} {
		sv := serve(srv)
		<-sv.started
		tb.Cleanup(func() { sv.stop() })
	}
	return u
}

func (u *fakeUpstream) ServeDNS(w miekg.ResponseWriter, q *miekg.Msg) {
	u.mu.Lock()
	u.names = append(u.names, q.Question[0].Name)
	u.mu.Unlock()
	resp := new(miekg.Msg).SetReply(q)
	resp.Answer = append(resp.Answer, &miekg.A{
		Hdr: miekg.RR_Header{Name: q.Question[0].Name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: 5},
		A:   upstreamIP,
	})
	w.WriteMsg(resp)
}

func (u *fakeUpstream) asked() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.names)
}

// deadAddr is a loopback UDP and TCP address nobody listens on, so queries to it fail at once.
func deadAddr(tb testing.TB) string {
	tb.Helper()
	udp, tcp, err := listen("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := udp.LocalAddr().String()
	udp.Close()
	tcp.Close()
	return addr
}

// startServer runs a Server for cfg until the test ends; cfg gets a loopback ListenAddr and the
// cluster domain and reverse zones of the tests unless set.
func startServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	cfg.ListenAddr = "127.0.0.1:0"
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.ReverseZones == nil {
		cfg.ReverseZones = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:96::/64")}
	}
	s, err := New(cfg, testLogger(tb))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()
	tb.Cleanup(func() {
		s.Close()
		if err := <-runErr; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return s
}

// query asks s for name over network; edns is the advertised UDP buffer size, 0 for no EDNS0.
func query(tb testing.TB, s *Server, network, name string, qtype uint16, edns uint16) *miekg.Msg {
	tb.Helper()
	q := new(miekg.Msg).SetQuestion(name, qtype)
	q.Id = 4242
	if edns > 0 {
		q.SetEdns0(edns, false)
	}
	c := &miekg.Client{Net: network, Timeout: 10 * time.Second}
	resp, _, err := c.Exchange(q, s.Addr().String())
	if err != nil {
		tb.Fatalf("query %s over %s: %v", name, network, err)
	}
	if resp.Id != q.Id {
		tb.Errorf("answer ID %d, want the query's %d", resp.Id, q.Id)
	}
	return resp
}

// answeredBy names the fake whose address is in the first A record.
func answeredBy(resp *miekg.Msg) string {
	for _, rr := range resp.Answer {
		if a, ok := rr.(*miekg.A); ok {
			switch {
			case a.A.Equal(upstreamIP):
				return "upstream"
			case a.A.Equal(clusterIP):
				return "cluster"
			}
		}
	}
	return "nobody (" + miekg.RcodeToString[resp.Rcode] + ")"
}

func TestRouting(t *testing.T) {
	cluster, up := &fakeCluster{}, startUpstream(t)
	s := startServer(t, Config{Cluster: cluster, Upstreams: []string{up.addr}})
	tests := []struct {
		name  string
		qtype uint16
		want  string
	}{
		{name: "kubernetes.default.svc.cluster.local.", qtype: miekg.TypeA, want: "cluster"},
		{name: "Web.Shop.SVC.Cluster.Local.", qtype: miekg.TypeA, want: "cluster"},
		{name: "cluster.local.", qtype: miekg.TypeA, want: "cluster"},
		{name: "10.0.96.10.in-addr.arpa.", qtype: miekg.TypePTR, want: "cluster"},
		{name: reverse("fd00:96::a"), qtype: miekg.TypePTR, want: "cluster"},
		{name: "example.com.", qtype: miekg.TypeA, want: "upstream"},
		{name: "notcluster.local.", qtype: miekg.TypeA, want: "upstream"},
		{name: "cluster.local.example.com.", qtype: miekg.TypeA, want: "upstream"},
		{name: "1.2.0.192.in-addr.arpa.", qtype: miekg.TypePTR, want: "upstream"},
		{name: "10.in-addr.arpa.", qtype: miekg.TypeSOA, want: "upstream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := query(t, s, "udp", tt.name, tt.qtype, 0)
			if got := answeredBy(resp); got != tt.want {
				t.Errorf("answered by %s, want %s", got, tt.want)
			}
			asked := up.asked()
			if tt.want == "cluster" {
				asked = cluster.asked()
			}
			if !slices.Contains(asked, tt.name) {
				t.Errorf("%s was not asked for %s (asked %q)", tt.want, tt.name, asked)
			}
		})
	}
}

func TestTCP(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, Config{Cluster: &fakeCluster{}, Upstreams: []string{up.addr}})
	for name, want := range map[string]string{"db.default.svc.cluster.local.": "cluster", "example.org.": "upstream"} {
		if got := answeredBy(query(t, s, "tcp", name, miekg.TypeA, 0)); got != want {
			t.Errorf("%s over TCP answered by %s, want %s", name, got, want)
		}
	}
}

func TestFailuresAnswerServfail(t *testing.T) {
	up := startUpstream(t)
	tests := []struct {
		name      string
		cluster   *fakeCluster
		upstreams []string
		query     string
		want      string
	}{
		{name: "upstream down", cluster: &fakeCluster{}, upstreams: []string{deadAddr(t)}, query: "example.com.", want: "SERVFAIL"},
		{name: "no upstreams", cluster: &fakeCluster{}, query: "example.com.", want: "SERVFAIL"},
		{name: "first upstream down, second answers", cluster: &fakeCluster{}, upstreams: []string{deadAddr(t), up.addr}, query: "example.com.", want: "NOERROR"},
		{name: "cluster fails", cluster: &fakeCluster{err: errors.New("manager unreachable")}, upstreams: []string{up.addr}, query: "web.default.svc.cluster.local.", want: "SERVFAIL"},
		{name: "cluster answers garbage", cluster: &fakeCluster{garbage: true}, upstreams: []string{up.addr}, query: "web.default.svc.cluster.local.", want: "SERVFAIL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Config{Cluster: tt.cluster, Upstreams: tt.upstreams})
			for _, network := range []string{"udp", "tcp"} {
				resp := query(t, s, network, tt.query, miekg.TypeA, 0)
				if got := miekg.RcodeToString[resp.Rcode]; got != tt.want {
					t.Errorf("over %s: rcode %s, want %s", network, got, tt.want)
				}
			}
		})
	}
}

// TestTruncation checks that an answer too big for the client's UDP buffer comes back truncated
// with TC set, and whole over TCP or with a big enough EDNS0 buffer.
func TestTruncation(t *testing.T) {
	s := startServer(t, Config{Cluster: &fakeCluster{}})
	const name = "big.default.svc.cluster.local."
	tests := []struct {
		network   string
		edns      uint16
		truncated bool
	}{
		{network: "udp", truncated: true},
		{network: "udp", edns: 1232, truncated: true},
		{network: "udp", edns: 4096},
		{network: "tcp"},
	}
	for _, tt := range tests {
		resp := query(t, s, tt.network, name, miekg.TypeA, tt.edns)
		resp.Compress = true // as the server sent it
		size := resp.Len()
		if resp.Truncated != tt.truncated {
			t.Errorf("%s edns=%d: TC=%v, want %v", tt.network, tt.edns, resp.Truncated, tt.truncated)
		}
		if limit := max(int(tt.edns), miekg.MinMsgSize); tt.network == "udp" && size > limit {
			t.Errorf("%s edns=%d: %d-byte answer exceeds the client's %d", tt.network, tt.edns, size, limit)
		}
		if !tt.truncated && len(resp.Answer) != 100 {
			t.Errorf("%s edns=%d: %d records, want all 100", tt.network, tt.edns, len(resp.Answer))
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no cluster", cfg: Config{ListenAddr: "127.0.0.1:0", ClusterDomain: "cluster.local"}},
		{name: "no domain", cfg: Config{ListenAddr: "127.0.0.1:0", Cluster: &fakeCluster{}}},
		{name: "bad upstream", cfg: Config{ListenAddr: "127.0.0.1:0", ClusterDomain: "cluster.local", Cluster: &fakeCluster{}, Upstreams: []string{"10.0.0.1"}}},
		{name: "bad listen address", cfg: Config{ListenAddr: "127.0.0.1", ClusterDomain: "cluster.local", Cluster: &fakeCluster{}}},
		{name: "invalid zone", cfg: Config{ListenAddr: "127.0.0.1:0", ClusterDomain: "cluster.local", Cluster: &fakeCluster{}, ReverseZones: []netip.Prefix{{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := New(tt.cfg, testLogger(t)); err == nil {
				s.Close()
				t.Fatal("New succeeded, want error")
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	cfg := Config{ListenAddr: "127.0.0.1:0", ClusterDomain: "cluster.local", Cluster: &fakeCluster{}}
	t.Run("close without run frees the port", func(t *testing.T) {
		s, err := New(cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		addr := s.Addr().String()
		s.Close()
		s.Close()
		if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Run after Close = %v, want ErrClosed", err)
		}
		again, err := New(Config{ListenAddr: addr, ClusterDomain: "cluster.local", Cluster: &fakeCluster{}}, testLogger(t))
		if err != nil {
			t.Fatalf("rebinding %s after Close: %v", addr, err)
		}
		again.Close()
	})
	t.Run("run stops with its context", func(t *testing.T) {
		s, err := New(cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		query(t, s, "udp", "web.default.svc.cluster.local.", miekg.TypeA, 0) // serving
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	})
}

func TestWithoutSelf(t *testing.T) {
	got := withoutSelf([]string{"127.0.0.1:53", "10.0.0.2:53", "127.0.0.11:53"}, "127.0.0.1:53", testLogger(t))
	if want := []string{"10.0.0.2:53", "127.0.0.11:53"}; !slices.Equal(got, want) {
		t.Errorf("withoutSelf = %q, want %q", got, want)
	}
}
