package manager

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("TELEDOCK_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: level}))
}

func newManager(tb testing.TB, cfg Config, objs ...runtime.Object) *Manager {
	tb.Helper()
	if cfg.Namespace == "" {
		cfg.Namespace = "teledock"
	}
	m, err := New(cfg, fake.NewClientset(objs...), testLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func arrive(tb testing.TB, m *Manager) string {
	tb.Helper()
	s, err := m.ArriveClient(context.Background(), &managerv1.ClientInfo{Name: "c", Namespace: "default"})
	if err != nil {
		tb.Fatal(err)
	}
	return s.GetSessionId()
}

func sessionIDs(tb testing.TB, m *Manager) []string {
	tb.Helper()
	r, err := m.ListSessions(context.Background(), &managerv1.ListSessionsRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, s := range r.GetSessions() {
		ids = append(ids, s.GetSessionId())
	}
	return ids
}

func TestLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newManager(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			m.Run(ctx)
			close(done)
		}()
		defer func() {
			cancel()
			<-done
		}()

		s, err := m.ArriveClient(ctx, &managerv1.ClientInfo{Name: "kept", Namespace: "default"})
		if err != nil {
			t.Fatal(err)
		}
		if s.GetLeaseSeconds() != 10 {
			t.Errorf("lease %ds, want 10s", s.GetLeaseSeconds())
		}
		kept := s.GetSessionId()
		silent := arrive(t, m)

		// The kept client renews every 5s; the silent one never does.
		for range 6 {
			time.Sleep(5 * time.Second)
			if _, err := m.Remain(ctx, &managerv1.SessionRequest{SessionId: kept}); err != nil {
				t.Fatalf("Remain: %v", err)
			}
		}
		// 30s later, well past 15s, only the kept session is left.
		if got := sessionIDs(t, m); !slices.Equal(got, []string{kept}) {
			t.Errorf("sessions %v, want only %v", got, kept)
		}
		if _, err := m.Remain(ctx, &managerv1.SessionRequest{SessionId: silent}); status.Code(err) != codes.NotFound {
			t.Errorf("Remain of an expired session: %v, want NotFound", err)
		}
		// The reaper removed it, not only the lazy checks.
		m.mu.Lock()
		_, present := m.sessions[silent]
		m.mu.Unlock()
		if present {
			t.Error("expired session still stored")
		}

		if _, err := m.Depart(ctx, &managerv1.SessionRequest{SessionId: kept}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Depart(ctx, &managerv1.SessionRequest{SessionId: kept}); err != nil {
			t.Errorf("second Depart: %v, want success (idempotent)", err)
		}
		if got := sessionIDs(t, m); len(got) != 0 {
			t.Errorf("sessions after Depart: %v", got)
		}
	})
}

// TestLeaseDeadline checks the promise in the brief: a silent client is gone within 15s.
func TestLeaseDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newManager(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go m.Run(ctx)
		id := arrive(t, m)
		s, _ := m.session(id)
		start := time.Now()
		<-s.ctx.Done()
		if d := time.Since(start); d < 10*time.Second || d > 15*time.Second {
			t.Errorf("session ended after %v, want between 10s and 15s", d)
		}
		if got := context.Cause(s.ctx); status.Code(got) != codes.NotFound {
			t.Errorf("cause %v, want NotFound", got)
		}
	})
}

func TestSessionChecks(t *testing.T) {
	m := newManager(t, Config{})
	id := arrive(t, m)
	ctx := context.Background()
	calls := map[string]func(id string) error{
		"Remain": func(id string) error {
			_, err := m.Remain(ctx, &managerv1.SessionRequest{SessionId: id})
			return err
		},
		"ClusterInfo": func(id string) error {
			_, err := m.ClusterInfo(ctx, &managerv1.SessionRequest{SessionId: id})
			return err
		},
		"LookupDNS": func(id string) error {
			_, err := m.LookupDNS(ctx, &managerv1.DNSRequest{SessionId: id})
			return err
		},
	}
	tests := []struct {
		name string
		id   string
		want codes.Code
	}{
		{"no id", "", codes.Unauthenticated},
		{"unknown id", "0123", codes.NotFound},
	}
	for _, tt := range tests {
		for name, call := range calls {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				if got := status.Code(call(tt.id)); got != tt.want {
					t.Errorf("code %v, want %v", got, tt.want)
				}
			})
		}
	}
	if _, err := m.ArriveClient(ctx, &managerv1.ClientInfo{Name: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ArriveClient without namespace: %v, want InvalidArgument", err)
	}
	if err := calls["Remain"](id); err != nil {
		t.Errorf("Remain of a live session: %v", err)
	}
}

func TestVersion(t *testing.T) {
	m := newManager(t, Config{Version: "v1.2.3", AgentImage: "teledock/agent:v1.2.3"})
	v, err := m.Version(context.Background(), &managerv1.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v.GetVersion() != "v1.2.3" || v.GetAgentImage() != "teledock/agent:v1.2.3" {
		t.Errorf("Version = %v", v)
	}
}

func node(name string, cidrs ...string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
}

func service(ns, name string, ips ...string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIPs: ips, Ports: []corev1.ServicePort{
			{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}},
	}
}

func pod(name string, hostNetwork bool, ips ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
	p.Spec.HostNetwork = hostNetwork
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func serviceCIDR(name string, cidrs ...string) *networkingv1.ServiceCIDR {
	return &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: cidrs}}
}

func TestClusterInfo(t *testing.T) {
	podSearch := ResolvConf{
		Nameservers: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Search:      []string{"teledock.svc.corp.example", "svc.corp.example", "corp.example"},
	}
	tests := []struct {
		name    string
		objs    []runtime.Object
		resolv  ResolvConf
		want    *managerv1.ClusterInfoResponse
		wantErr codes.Code
	}{
		{
			name: "from the API",
			objs: []runtime.Object{
				node("a", "10.244.0.0/24", "fd00:10:244::/64"), node("b", "10.244.1.0/24"),
				serviceCIDR("kubernetes", "10.96.0.0/12", "fd00:10:96::/112"),
				service("kube-system", "kube-dns", "10.96.0.10"),
			},
			resolv: podSearch,
			want: &managerv1.ClusterInfoResponse{
				PodSubnets:     []string{"10.244.0.0/24", "10.244.1.0/24", "fd00:10:244::/64"},
				ServiceSubnets: []string{"10.96.0.0/12", "fd00:10:96::/112"},
				ClusterDomain:  "corp.example", DnsIp: "10.96.0.10", ManagerNamespace: "teledock",
			},
		},
		{
			name: "guessed from pods and services",
			objs: []runtime.Object{
				node("a"),
				pod("p1", false, "10.1.2.3"), pod("p2", false, "10.1.200.4"), pod("p3", false, "10.7.0.1"),
				pod("host", true, "192.168.1.10"),
				service("default", "kubernetes", "10.96.0.1"), service("default", "web", "10.97.3.4"),
				service("default", "headless", "None"),
				service("kube-system", "kube-dns", "10.96.0.10"),
			},
			want: &managerv1.ClusterInfoResponse{
				PodSubnets:     []string{"10.1.0.0/16", "10.7.0.0/16"},
				ServiceSubnets: []string{"10.96.0.0/16", "10.97.0.0/16"},
				ClusterDomain:  "cluster.local", DnsIp: "10.96.0.10", ManagerNamespace: "teledock",
			},
		},
		{
			name: "DNS from resolv.conf without kube-dns",
			objs: []runtime.Object{
				node("a", "10.244.0.0/16", "10.244.3.0/24"),
				serviceCIDR("kubernetes", "10.96.0.0/16"),
			},
			resolv: podSearch,
			want: &managerv1.ClusterInfoResponse{
				PodSubnets:     []string{"10.244.0.0/16"},
				ServiceSubnets: []string{"10.96.0.0/16"},
				ClusterDomain:  "corp.example", DnsIp: "10.96.0.10", ManagerNamespace: "teledock",
			},
		},
		{
			name:    "no DNS at all",
			objs:    []runtime.Object{node("a", "10.244.0.0/16"), serviceCIDR("kubernetes", "10.96.0.0/16")},
			wantErr: codes.Unavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, Config{ResolvConf: tt.resolv}, tt.objs...)
			got, err := m.ClusterInfo(context.Background(), &managerv1.SessionRequest{SessionId: arrive(t, m)})
			if status.Code(err) != tt.wantErr {
				t.Fatalf("ClusterInfo error %v, want code %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got.String() != tt.want.String() {
				t.Errorf("ClusterInfo\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestMergePrefixes(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, nil},
		{"duplicates", []string{"10.0.0.0/16", "10.0.0.0/16"}, []string{"10.0.0.0/16"}},
		{"contained after", []string{"10.0.0.0/8", "10.1.0.0/16"}, []string{"10.0.0.0/8"}},
		{"contained before", []string{"10.1.0.0/16", "10.0.0.0/8", "11.0.0.0/8"}, []string{"10.0.0.0/8", "11.0.0.0/8"}},
		{"adjacent kept", []string{"10.1.0.0/16", "10.0.0.0/16"}, []string{"10.0.0.0/16", "10.1.0.0/16"}},
		{"families", []string{"fd00::/64", "10.0.0.0/16"}, []string{"10.0.0.0/16", "fd00::/64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in []netip.Prefix
			for _, s := range tt.in {
				in = append(in, netip.MustParsePrefix(s))
			}
			if got := prefixStrings(mergePrefixes(in)); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseResolvConf(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantNS     []string
		wantSearch []string
		wantDomain string
	}{
		{
			name:       "pod",
			in:         "search teledock.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
			wantNS:     []string{"10.96.0.10"},
			wantSearch: []string{"teledock.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			wantDomain: "cluster.local",
		},
		{
			name:       "custom domain, only the namespaced entry, comments",
			in:         "# generated\nnameserver bogus\nnameserver fd00::a\nsearch ns1.svc.k8s.corp.\n",
			wantNS:     []string{"fd00::a"},
			wantSearch: []string{"ns1.svc.k8s.corp"},
			wantDomain: "k8s.corp",
		},
		{
			name:       "not a pod",
			in:         "nameserver 1.1.1.1\nsearch example.com\n",
			wantNS:     []string{"1.1.1.1"},
			wantSearch: []string{"example.com"},
			wantDomain: "cluster.local",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := ParseResolvConf(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var ns []string
			for _, a := range rc.Nameservers {
				ns = append(ns, a.String())
			}
			if !slices.Equal(ns, tt.wantNS) || !slices.Equal(rc.Search, tt.wantSearch) {
				t.Errorf("got %v %v, want %v %v", ns, rc.Search, tt.wantNS, tt.wantSearch)
			}
			m := &Manager{cfg: Config{ResolvConf: rc}}
			if got := m.clusterDomain(); got != tt.wantDomain {
				t.Errorf("cluster domain %q, want %q", got, tt.wantDomain)
			}
		})
	}
}

// TestTunnelThroughManager runs the manager behind a real gRPC server and checks that a tunnel
// needs a live session and ends when the session departs.
func TestTunnelThroughManager(t *testing.T) {
	m := newManager(t, Config{})
	client := serveGRPC(t, m)
	ctx := context.Background()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	dst := lis.Addr().(*net.TCPAddr).AddrPort()

	if _, err := tunnel.Dial(ctx, client, "nope", "tcp", dst); status.Code(err) != codes.NotFound {
		t.Errorf("Dial with an unknown session: %v, want NotFound", err)
	}
	if _, err := tunnel.Dial(ctx, client, "", "tcp", dst); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Dial without a session: %v, want Unauthenticated", err)
	}

	s, err := client.ArriveClient(ctx, &managerv1.ClientInfo{Name: "c", Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tunnel.Dial(ctx, client, s.GetSessionId(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	if _, err := client.Depart(ctx, &managerv1.SessionRequest{SessionId: s.GetSessionId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); status.Code(err) != codes.NotFound {
		t.Errorf("Read after Depart: %v, want NotFound (session departed)", err)
	}
}

func serveGRPC(tb testing.TB, m *Manager, opts ...grpc.ServerOption) managerv1.ManagerClient {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(append(tunnel.ServerOptions(), opts...)...)
	managerv1.RegisterManagerServer(gs, m)
	go gs.Serve(lis)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(),
		append(tunnel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cc.Close()
		gs.Stop()
	})
	return managerv1.NewManagerClient(cc)
}
