package intercept

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"teledock.dev/teledock/agent/forward"
	"teledock.dev/teledock/agent/internal/managertest"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

func TestLoopbackTarget(t *testing.T) {
	tcp, udp := managerv1.Protocol_PROTOCOL_TCP, managerv1.Protocol_PROTOCOL_UDP
	for _, tc := range []struct {
		name        string
		protocol    managerv1.Protocol
		address     string
		wantNetwork string
		wantAddress string
		wantErr     error // nil with an empty wantAddress: some error
	}{
		{name: "ipv4 loopback", protocol: tcp, address: "127.0.0.1:8080", wantNetwork: "tcp", wantAddress: "127.0.0.1:8080"},
		{name: "all of 127/8", protocol: tcp, address: "127.1.2.3:80", wantNetwork: "tcp", wantAddress: "127.1.2.3:80"},
		{name: "ipv6 loopback", protocol: udp, address: "[::1]:53", wantNetwork: "udp", wantAddress: "[::1]:53"},
		{name: "mapped loopback", protocol: tcp, address: "[::ffff:127.0.0.1]:80", wantNetwork: "tcp", wantAddress: "127.0.0.1:80"},
		{name: "localhost", protocol: tcp, address: "localhost:9000", wantNetwork: "tcp", wantAddress: "127.0.0.1:9000"},
		{name: "pod ip", protocol: tcp, address: "10.1.2.3:80", wantErr: ErrNotLoopback},
		{name: "unspecified", protocol: tcp, address: "0.0.0.0:80", wantErr: ErrNotLoopback},
		{name: "a name", protocol: tcp, address: "kubernetes.default:443", wantErr: ErrNotLoopback},
		{name: "zoned", protocol: tcp, address: "[::1%lo]:80", wantErr: ErrNotLoopback},
		{name: "no port", protocol: tcp, address: "127.0.0.1"},
		{name: "port 0", protocol: tcp, address: "127.0.0.1:0"},
		{name: "port out of range", protocol: tcp, address: "127.0.0.1:70000"},
		{name: "no protocol", address: "127.0.0.1:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			network, address, err := LoopbackTarget(&managerv1.Dial{Protocol: tc.protocol, Address: tc.address})
			if tc.wantAddress == "" {
				if err == nil {
					t.Fatalf("allowed %s %s", network, address)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || network != tc.wantNetwork || address != tc.wantAddress {
				t.Errorf("got %q %q %v, want %q %q", network, address, err, tc.wantNetwork, tc.wantAddress)
			}
		})
	}
}

// noTunnels is a Tunneler for tests that never dial.
type noTunnels struct{}

func (noTunnels) AgentTunnel(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[managerv1.TunnelMessage, managerv1.TunnelMessage], error) {
	return nil, errors.New("no tunnels here")
}

func TestRouterSet(t *testing.T) {
	app := forward.Destination{Name: "app", Dial: func(context.Context, string, forward.Target) (forward.Conn, error) { return nil, nil }}
	web := forward.Target{Network: "tcp", AgentPort: 9900, AppPort: 8080}
	dns := forward.Target{Network: "udp", AgentPort: 9901, AppPort: 53}
	tcp, udp := managerv1.Protocol_PROTOCOL_TCP, managerv1.Protocol_PROTOCOL_UDP
	for _, tc := range []struct {
		name    string
		targets []*managerv1.AgentTarget
		reset   bool
		want    []string
		wantWeb string
		wantDNS string
	}{
		{name: "nothing intercepted", targets: []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: tcp}},
			want: []string{}, wantWeb: "app", wantDNS: "app"},
		{name: "tcp intercepted", targets: []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: tcp, InterceptId: "i1"}, {AgentPort: 9901, Protocol: udp}},
			want: []string{"9900/tcp=i1"}, wantWeb: "intercept i1", wantDNS: "app"},
		{name: "both", targets: []*managerv1.AgentTarget{{AgentPort: 9901, Protocol: udp, InterceptId: "i2"}, {AgentPort: 9900, Protocol: tcp, InterceptId: "i1"}},
			want: []string{"9900/tcp=i1", "9901/udp=i2"}, wantWeb: "intercept i1", wantDNS: "intercept i2"},
		{name: "the protocol must match", targets: []*managerv1.AgentTarget{{AgentPort: 9901, Protocol: tcp, InterceptId: "i2"}},
			want: []string{"9901/tcp=i2"}, wantWeb: "app", wantDNS: "app"},
		{name: "unspecified protocol is tcp", targets: []*managerv1.AgentTarget{{AgentPort: 9900, InterceptId: "i1"}},
			want: []string{"9900/tcp=i1"}, wantWeb: "intercept i1", wantDNS: "app"},
		{name: "bad port ignored", targets: []*managerv1.AgentTarget{{AgentPort: 70000, Protocol: tcp, InterceptId: "i1"}},
			want: []string{}, wantWeb: "app", wantDNS: "app"},
		{name: "reset", targets: []*managerv1.AgentTarget{{AgentPort: 9900, Protocol: tcp, InterceptId: "i1"}}, reset: true,
			want: []string{}, wantWeb: "app", wantDNS: "app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRouter(managertest.Logger(t), noTunnels{}, app, netip.MustParseAddr("10.1.2.3"))
			if err != nil {
				t.Fatal(err)
			}
			r.Set("s1", tc.targets)
			if tc.reset {
				r.Reset()
			}
			if got := r.Intercepted(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("intercepted %q, want %q", got, tc.want)
			}
			if got := r.Route(forward.Flow{Target: web}).Name; got != tc.wantWeb {
				t.Errorf("tcp flow goes to %q, want %q", got, tc.wantWeb)
			}
			if got := r.Route(forward.Flow{Target: dns}).Name; got != tc.wantDNS {
				t.Errorf("udp flow goes to %q, want %q", got, tc.wantDNS)
			}
		})
	}
}

func client(t *testing.T, m *managertest.Manager) managerv1.ManagerClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///fake", grpc.WithContextDialer(m.Dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return managerv1.NewManagerClient(conn)
}

// udpEcho answers every datagram with prefix and the datagram.
func udpEcho(t *testing.T, prefix string) *net.UDPAddr {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr)
}

// A UDP flow on an intercepted target goes to the developer as datagrams over an AgentTunnel.
func TestUDPIntercept(t *testing.T) {
	m := managertest.Start(t)
	app, dev := udpEcho(t, "app:"), udpEcho(t, "dev:")
	m.SetDeveloper(dev.String())
	mgr := client(t, m)
	sess, err := mgr.ArriveAgent(context.Background(), &managerv1.AgentInfo{PodName: "dns-1"})
	if err != nil {
		t.Fatal(err)
	}
	log := managertest.Logger(t)
	r, err := NewRouter(log, mgr, forward.App("127.0.0.1"), netip.MustParseAddr("10.1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	target := forward.Target{Name: "dns", Network: "udp", Listen: "127.0.0.1:0", AppPort: uint16(app.Port), AgentPort: 9901}
	fwd, err := forward.New(log, forward.Config{Targets: []forward.Target{target}, Router: r.Route, UDPIdleTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })

	exchange := func(msg string) string {
		c, err := net.Dial("udp", fwd.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
	if got := exchange("q1"); got != "app:q1" {
		t.Fatalf("not intercepted: %q", got)
	}
	r.Set(sess.GetSessionId(), []*managerv1.AgentTarget{{AgentPort: 9901, TargetPort: 53, Protocol: managerv1.Protocol_PROTOCOL_UDP, InterceptId: "i-dns"}})
	if got := exchange("q2"); got != "dev:q2" {
		t.Fatalf("intercepted: %q", got)
	}
	d := <-m.Dials
	want := &managerv1.Dial{SessionId: sess.GetSessionId(), Protocol: managerv1.Protocol_PROTOCOL_UDP, Address: "10.1.2.3:" + strconv.Itoa(app.Port),
		InterceptId: "i-dns", TargetPort: 53, TimeoutMs: d.GetTimeoutMs()}
	if !proto.Equal(d, want) {
		t.Errorf("dial %v, want %v", d, want)
	}
}

func startToPod(t *testing.T, m *managertest.Manager) *ToPod {
	t.Helper()
	p, err := NewToPod(managertest.Logger(t), client(t, m), (&net.Dialer{}).DialContext)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func accepted(t *testing.T, m *managertest.Manager) *managertest.Accepted {
	t.Helper()
	select {
	case a := <-m.Accepts:
		t.Cleanup(a.Done)
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no Accept stream")
	}
	return nil
}

func TestToPodUDP(t *testing.T) {
	m := managertest.Start(t)
	echo := udpEcho(t, "pod:")
	p := startToPod(t, m)
	p.Accept("agent-1", &managerv1.IncomingDial{ConnId: "c1", InterceptId: "i1"})
	a := accepted(t, m)
	res, err := a.Dial(&managerv1.Dial{SessionId: "client-1", Protocol: managerv1.Protocol_PROTOCOL_UDP, Address: echo.String()})
	if err != nil || !res.GetOk() {
		t.Fatalf("dial: %v %v", res, err)
	}
	for _, q := range []string{"q1", "q2"} {
		if err := a.Write([]byte(q), false); err != nil {
			t.Fatal(err)
		}
		d, err := a.Read()
		if err != nil || string(d.GetPayload()) != "pod:"+q {
			t.Errorf("answer to %s: %v %v", q, d, err)
		}
	}
}

func TestToPodClose(t *testing.T) {
	m := managertest.Start(t)
	// A destination that accepts and never answers keeps the connection open.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := startToPod(t, m)
	p.Accept("agent-1", &managerv1.IncomingDial{ConnId: "c1"})
	a := accepted(t, m)
	if res, err := a.Dial(&managerv1.Dial{Protocol: managerv1.Protocol_PROTOCOL_TCP, Address: l.Addr().String()}); err != nil || !res.GetOk() {
		t.Fatalf("dial: %v %v", res, err)
	}
	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close does not end an open connection")
	}
	if _, err := a.ReadAll(); err == nil {
		t.Error("the stream ended cleanly; want the cancel to show")
	}
	// Dials after Close are ignored rather than leaked.
	p.Accept("agent-1", &managerv1.IncomingDial{ConnId: "c2"})
	select {
	case a := <-m.Accepts:
		a.Done()
		t.Error("a closed ToPod accepted")
	case <-time.After(50 * time.Millisecond):
	}
}
