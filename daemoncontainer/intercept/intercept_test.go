package intercept

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAcceptDeliversToDestination(t *testing.T) {
	tests := []struct {
		name     string
		network  string
		protocol managerv1.Protocol
	}{
		{name: "tcp", network: "tcp", protocol: managerv1.Protocol_PROTOCOL_TCP},
		{name: "udp", network: "udp", protocol: managerv1.Protocol_PROTOCOL_UDP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeManager(t)
			m, _ := startIntercepts(t, f)
			waitWatch(t, f, "s1")

			var dest netip.AddrPort
			if tt.network == "udp" {
				dest = udpEcho(t)
			} else {
				dest = tcpEcho(t)
			}
			info, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: dest.Port()})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := info.GetDestination(), dest.String(); got != want {
				t.Errorf("destination = %q, want %q", got, want)
			}

			f.announce(t, "s1", &managerv1.IncomingDial{ConnId: "c1", InterceptId: info.GetId()})
			a := waitAccepted(t, f)
			if a.accept.GetSessionId() != "s1" || a.accept.GetConnId() != "c1" {
				t.Errorf("accept = %v, want session s1, conn c1", a.accept)
			}
			// The address is the original destination in the cluster; the client ignores it.
			conn, err := dialAccepted(t, a, &managerv1.Dial{SessionId: "agent", InterceptId: info.GetId(), TargetPort: 8080},
				tt.network, netip.MustParseAddrPort("10.244.0.7:8080"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()

			if tt.network == "udp" {
				if _, err := conn.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 100)
				n, err := conn.Read(buf)
				if err != nil || string(buf[:n]) != "echo:ping" {
					t.Fatalf("read %q, %v; want echo:ping", buf[:n], err)
				}
				return
			}
			if _, err := conn.Write([]byte("hello through the intercept")); err != nil {
				t.Fatal(err)
			}
			if err := conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(conn)
			if err != nil || string(got) != "hello through the intercept" {
				t.Fatalf("read %q, %v", got, err)
			}
		})
	}
}

func TestAcceptUnknownIntercept(t *testing.T) {
	f := newFakeManager(t)
	startIntercepts(t, f)
	waitWatch(t, f, "s1")

	f.announce(t, "s1", &managerv1.IncomingDial{ConnId: "c1", InterceptId: "someone-elses"})
	a := waitAccepted(t, f)
	_, err := dialAccepted(t, a, &managerv1.Dial{InterceptId: "someone-elses"}, "tcp", netip.MustParseAddrPort("10.244.0.7:8080"))
	if !errors.Is(err, tunnel.ErrBadRequest) {
		t.Fatalf("err = %v, want a bad request", err)
	}
}

func TestAcceptRefusedDestination(t *testing.T) {
	f := newFakeManager(t)
	m, _ := startIntercepts(t, f)
	waitWatch(t, f, "s1")

	info, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: freePort(t, "tcp")})
	if err != nil {
		t.Fatal(err)
	}
	f.announce(t, "s1", &managerv1.IncomingDial{ConnId: "c1", InterceptId: info.GetId()})
	a := waitAccepted(t, f)
	_, err = dialAccepted(t, a, &managerv1.Dial{InterceptId: info.GetId()}, "tcp", netip.MustParseAddrPort("10.244.0.7:8080"))
	if !errors.Is(err, tunnel.ErrRefused) {
		t.Fatalf("err = %v, want refused (nothing listens on the local port)", err)
	}
}

func TestToPod(t *testing.T) {
	f := newFakeManager(t)
	tcpDest, udpDest := tcpEcho(t), udpEcho(t)
	f.podTarget = func(d *managerv1.Dial) (string, string, error) {
		if d.GetProtocol() == managerv1.Protocol_PROTOCOL_UDP {
			return "udp", udpDest.String(), nil
		}
		return "tcp", tcpDest.String(), nil
	}
	m, _ := startIntercepts(t, f)
	tcpPort, udpPort := freePort(t, "tcp"), freePort(t, "udp")
	info, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080, ToPod: []ToPod{{Port: tcpPort}, {Port: udpPort, UDP: true}}})
	if err != nil {
		t.Fatal(err)
	}
	create, _ := f.lastCreate()
	if len(create.GetToPod()) != 2 || create.GetToPod()[1].GetProtocol() != managerv1.Protocol_PROTOCOL_UDP {
		t.Errorf("to_pod sent to the manager = %v", create.GetToPod())
	}

	t.Run("tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", netip.AddrPortFrom(podLoopback, tcpPort).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("to the sidecar")); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "to the sidecar" {
			t.Fatalf("read %q, %v", got, err)
		}
		checkPodDial(t, f, info.GetId(), managerv1.Protocol_PROTOCOL_TCP, tcpPort)
	})
	t.Run("udp", func(t *testing.T) {
		c, err := net.Dial("udp", netip.AddrPortFrom(podLoopback, udpPort).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		for _, msg := range []string{"one", "two"} {
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "echo:"+msg {
				t.Fatalf("read %q, %v; want echo:%s", buf[:n], err, msg)
			}
		}
		// Both datagrams were one flow: one dial.
		checkPodDial(t, f, info.GetId(), managerv1.Protocol_PROTOCOL_UDP, udpPort)
		select {
		case d := <-f.podDials:
			t.Errorf("second dial for one flow: %v", d)
		default:
		}
	})

	// Leaving closes the listeners: the ports are free again.
	if err := m.Remove(ctxT(t), "echo"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", netip.AddrPortFrom(podLoopback, tcpPort).String()); err == nil {
		t.Error("--to-pod TCP port still listening after Remove")
	}
	pc, err := net.ListenPacket("udp", netip.AddrPortFrom(podLoopback, udpPort).String())
	if err != nil {
		t.Errorf("--to-pod UDP port still taken after Remove: %v", err)
	} else {
		pc.Close()
	}
}

func checkPodDial(t *testing.T, f *fakeManager, interceptID string, proto managerv1.Protocol, port uint16) {
	t.Helper()
	select {
	case d := <-f.podDials:
		want := netip.AddrPortFrom(podLoopback, port).String()
		if d.GetInterceptId() != interceptID || d.GetSessionId() != "s1" || d.GetAddress() != want || d.GetProtocol() != proto {
			t.Errorf("dial = %v, want intercept %s, session s1, address %s, %v", d, interceptID, want, proto)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no --to-pod dial")
	}
}

func TestCreateChecks(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := uint16(busy.Addr().(*net.TCPAddr).Port)
	sidecar := freePort(t, "tcp")

	tests := []struct {
		name        string
		first       *Request // created before, when set
		req         Request
		wantErr     error
		wantCreates int // calls to the manager, including first's
	}{
		{name: "local port of another intercept", first: &Request{Name: "a", LocalPort: 8080},
			req: Request{Name: "b", LocalPort: 8080}, wantErr: ErrLocalPortInUse, wantCreates: 1},
		{name: "same port, other address", first: &Request{Name: "a", LocalPort: 8080},
			req: Request{Name: "b", LocalPort: 8080, Address: netip.MustParseAddr("172.17.0.5")}, wantCreates: 2},
		{name: "same name changes the intercept", first: &Request{Name: "a", LocalPort: 8080},
			req: Request{Name: "a", LocalPort: 8080, ServicePort: "http"}, wantCreates: 2},
		{name: "to-pod port taken", req: Request{Name: "a", LocalPort: 8080, ToPod: []ToPod{{Port: busyPort}}},
			wantErr: ErrToPodPortInUse},
		{name: "to-pod is the local port", req: Request{Name: "a", LocalPort: 9000, ToPod: []ToPod{{Port: 9000}}},
			wantErr: ErrInvalid},
		{name: "to-pod is another intercept's local port", first: &Request{Name: "a", LocalPort: 9100},
			req: Request{Name: "b", LocalPort: 8080, ToPod: []ToPod{{Port: 9100}}}, wantErr: ErrToPodPortInUse, wantCreates: 1},
		{name: "UDP to-pod on another intercept's local port", first: &Request{Name: "a", LocalPort: sidecar},
			req: Request{Name: "b", LocalPort: 8080, ToPod: []ToPod{{Port: sidecar, UDP: true}}}, wantCreates: 2},
		{name: "local port is another intercept's to-pod", first: &Request{Name: "a", LocalPort: 8080, ToPod: []ToPod{{Port: sidecar}}},
			req: Request{Name: "b", LocalPort: sidecar}, wantErr: ErrLocalPortInUse, wantCreates: 1},
		{name: "to-pod twice", req: Request{Name: "a", LocalPort: 9000, ToPod: []ToPod{{Port: 9001}, {Port: 9001}}},
			wantErr: ErrInvalid},
		{name: "mechanism", req: Request{Name: "a", LocalPort: 9000, Mechanism: "http"}, wantErr: ErrInvalid},
		{name: "no name", req: Request{LocalPort: 9000}, wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeManager(t)
			m, _ := startIntercepts(t, f)
			if tt.first != nil {
				if _, err := m.Create(ctxT(t), *tt.first); err != nil {
					t.Fatal(err)
				}
			}
			_, err := m.Create(ctxT(t), tt.req)
			if tt.wantErr == nil && err != nil || !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if got := f.createCount(); got != tt.wantCreates {
				t.Errorf("manager saw %d creates, want %d", got, tt.wantCreates)
			}
		})
	}
}

func TestCreateDefaultLocalPort(t *testing.T) {
	f := newFakeManager(t)
	f.targetPort = 8081
	m, _ := startIntercepts(t, f)
	info, err := m.Create(ctxT(t), Request{Name: "echo-no-svc"})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetDestination() != "127.0.0.1:8081" || info.GetLocalPort() != 8081 {
		t.Errorf("destination %q port %d, want the container port 8081", info.GetDestination(), info.GetLocalPort())
	}
	// The port is now taken for other intercepts; the one without --port that lands on it is undone.
	if _, err := m.Create(ctxT(t), Request{Name: "other", LocalPort: 8081}); !errors.Is(err, ErrLocalPortInUse) {
		t.Errorf("explicit port: err = %v, want ErrLocalPortInUse", err)
	}
	if _, err := m.Create(ctxT(t), Request{Name: "third"}); !errors.Is(err, ErrLocalPortInUse) {
		t.Errorf("default port: err = %v, want ErrLocalPortInUse", err)
	}
	f.mu.Lock()
	removed := len(f.removes) == 1 && f.removes[0].GetName() == "third"
	f.mu.Unlock()
	if !removed {
		t.Error("the unusable intercept was not removed at the manager")
	}
}

// TestFailedChangeKeepsTheIntercept: changing an intercept to the default local port, which
// another intercept already delivers to, fails and leaves the intercept as it was, here and at the
// manager.
func TestFailedChangeKeepsTheIntercept(t *testing.T) {
	f := newFakeManager(t)
	f.targetPort = 8081
	m, _ := startIntercepts(t, f)
	if _, err := m.Create(ctxT(t), Request{Name: "x", LocalPort: 9000}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctxT(t), Request{Name: "y"}); err != nil { // delivers to 8081
		t.Fatal(err)
	}
	if _, err := m.Create(ctxT(t), Request{Name: "x"}); !errors.Is(err, ErrLocalPortInUse) {
		t.Fatalf("change to a taken default port: err = %v, want ErrLocalPortInUse", err)
	}
	if !f.has("s1", "x") {
		t.Fatal("the failed change removed the intercept at the manager")
	}
	if r, _ := f.lastCreate(); r.GetName() != "x" || r.GetLocalPort() != 9000 {
		t.Errorf("the manager's intercept x was last set to %v, want its old local port 9000", r)
	}
	var dest string
	for _, ic := range m.List() {
		if ic.GetName() == "x" {
			dest = ic.GetDestination()
		}
	}
	if dest != "127.0.0.1:9000" {
		t.Errorf("daemon shows x delivering to %q, want 127.0.0.1:9000", dest)
	}
}

func TestCreatePassesManagerErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{name: "unknown workload", err: status.Error(codes.NotFound, "workload nope not found in namespace app")},
		{name: "several services", err: status.Error(codes.FailedPrecondition, "several services select echo: a, b")},
		{name: "agent late", err: status.Error(codes.DeadlineExceeded, "traffic-agent did not arrive: ImagePullBackOff")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeManager(t)
			f.createErr = tt.err
			m, _ := startIntercepts(t, f)
			port := freePort(t, "tcp")
			_, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080, ToPod: []ToPod{{Port: port}}})
			want, _ := status.FromError(tt.err)
			if status.Code(err) != want.Code() {
				t.Fatalf("err = %v, want code %v", err, want.Code())
			}
			if len(m.List()) != 0 {
				t.Error("a failed create left an intercept")
			}
			// The --to-pod listener opened for it is closed again.
			lis, lerr := net.Listen("tcp", netip.AddrPortFrom(podLoopback, port).String())
			if lerr != nil {
				t.Errorf("--to-pod port still taken: %v", lerr)
			} else {
				lis.Close()
			}
		})
	}
}

func TestCreateGivenUpIsRemoved(t *testing.T) {
	f := newFakeManager(t)
	f.createErr = status.Error(codes.DeadlineExceeded, "traffic-agent did not arrive")
	m, _ := startIntercepts(t, f)
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.removes)
		f.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an abandoned create was not removed at the manager")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCreateAnswersBeforeDeadline(t *testing.T) {
	f := newFakeManager(t)
	m, _ := startIntercepts(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Create(ctx, Request{Name: "echo", LocalPort: 8080}); err != nil {
		t.Fatal(err)
	}
	_, left := f.lastCreate()
	if left <= 0 || left > 28*time.Second+500*time.Millisecond {
		t.Errorf("manager's deadline %v away, want about 28s (the caller's less the margin)", left)
	}
}

func TestRemove(t *testing.T) {
	f := newFakeManager(t)
	m, _ := startIntercepts(t, f)
	if err := m.Remove(ctxT(t), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove unknown: err = %v, want ErrNotFound", err)
	}
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080}); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctxT(t), "echo"); err != nil {
		t.Fatal(err)
	}
	if len(m.List()) != 0 {
		t.Errorf("list after remove = %v", m.List())
	}
	// The port is free for a new intercept.
	if _, err := m.Create(ctxT(t), Request{Name: "other", LocalPort: 8080}); err != nil {
		t.Errorf("create on the freed port: %v", err)
	}
}

func TestNotConnected(t *testing.T) {
	f := newFakeManager(t)
	m, sess := startIntercepts(t, f)
	sess.setID("")
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("create: err = %v", err)
	}
	if _, err := m.Workloads(ctxT(t), ""); !errors.Is(err, ErrNotConnected) {
		t.Errorf("workloads: err = %v", err)
	}
}

func TestWorkloadsUsesConnectionNamespace(t *testing.T) {
	f := newFakeManager(t)
	m, _ := startIntercepts(t, f)
	resp, err := m.Workloads(ctxT(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if w := resp.GetWorkloads(); len(w) != 1 || w[0].GetNamespace() != "app" {
		t.Errorf("workloads = %v", w)
	}
}

func TestNewSessionRecreatesIntercepts(t *testing.T) {
	f := newFakeManager(t)
	m, sess := startIntercepts(t, f)
	waitWatch(t, f, "s1")
	dest := tcpEcho(t)
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: dest.Port(), ServicePort: "http"}); err != nil {
		t.Fatal(err)
	}

	sess.setID("s2")
	waitWatch(t, f, "s2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _ := f.lastCreate(); r.GetSessionId() == "s2" {
			if r.GetName() != "echo" || r.GetPort() != "http" || r.GetLocalPort() != int32(dest.Port()) {
				t.Errorf("created again as %v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("intercept not created again under the new session")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Connections announced on the new stream reach the destination with the new intercept ID.
	var id string
	for deadline := time.Now().Add(5 * time.Second); ; {
		if l := m.List(); len(l) == 1 && l[0].GetSessionId() == "s2" {
			id = l[0].GetId()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list = %v", m.List())
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.announce(t, "s2", &managerv1.IncomingDial{ConnId: "c2", InterceptId: id})
	a := waitAccepted(t, f)
	if a.accept.GetSessionId() != "s2" {
		t.Errorf("accept session = %q, want s2", a.accept.GetSessionId())
	}
	conn, err := dialAccepted(t, a, &managerv1.Dial{InterceptId: id}, "tcp", netip.MustParseAddrPort("10.244.0.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestRecreateFailureDropsIntercept(t *testing.T) {
	f := newFakeManager(t)
	m, sess := startIntercepts(t, f)
	port := freePort(t, "tcp")
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080, ToPod: []ToPod{{Port: port}}}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.createErr = status.Error(codes.FailedPrecondition, "intercepted by another client")
	f.mu.Unlock()
	sess.setID("s2")
	deadline := time.Now().Add(10 * time.Second)
	for len(m.List()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("intercept kept although it could not be created again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	lis, err := net.Listen("tcp", netip.AddrPortFrom(podLoopback, port).String())
	if err != nil {
		t.Errorf("--to-pod port still taken: %v", err)
	} else {
		lis.Close()
	}
}

// TestLeaveWhileRecreating: an intercept left while it is being created again for a new session
// must not live on at the manager with nobody to deliver its connections to.
func TestLeaveWhileRecreating(t *testing.T) {
	f := newFakeManager(t)
	m, sess := startIntercepts(t, f)
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080}); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	f.mu.Lock()
	f.createGate, f.createEntered = gate, make(chan string, 1)
	f.mu.Unlock()
	sess.setID("s2")
	select {
	case <-f.createEntered:
	case <-time.After(10 * time.Second):
		t.Fatal("the intercept is not being created again")
	}
	if err := m.Remove(ctxT(t), "echo"); err != nil {
		t.Fatalf("leave while recreating: %v", err)
	}
	close(gate)
	// The held create lands at the manager (it records and stores under one lock), then must go.
	deadline := time.Now().Add(10 * time.Second)
	for f.createCount() < 2 || f.has("s2", "echo") {
		if time.Now().After(deadline) {
			t.Fatal("the intercept created again after leave stays at the manager")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l := m.List(); len(l) != 0 {
		t.Errorf("daemon still lists %v", l)
	}
}

func TestCloseEndsListeners(t *testing.T) {
	f := newFakeManager(t)
	m, _ := startIntercepts(t, f)
	port := freePort(t, "tcp")
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080, ToPod: []ToPod{{Port: port}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", netip.AddrPortFrom(podLoopback, port).String()); err == nil {
		t.Error("--to-pod port still listening after Close")
	}
	if _, err := m.Create(ctxT(t), Request{Name: "x", LocalPort: 9000}); !errors.Is(err, ErrClosed) {
		t.Errorf("create after Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseLeavesNoGoroutines runs every path (an accepted connection, --to-pod TCP and UDP) and
// checks that Close (with the manager's connection) ends every goroutine they started.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("traffic", func(t *testing.T) {
		f := newFakeManager(t)
		tcpDest, udpDest := tcpEcho(t), udpEcho(t)
		f.podTarget = func(d *managerv1.Dial) (string, string, error) {
			if d.GetProtocol() == managerv1.Protocol_PROTOCOL_UDP {
				return "udp", udpDest.String(), nil
			}
			return "tcp", tcpDest.String(), nil
		}
		m, _ := startIntercepts(t, f)
		waitWatch(t, f, "s1")
		tcpPort, udpPort := freePort(t, "tcp"), freePort(t, "udp")
		info, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: tcpDest.Port(), ToPod: []ToPod{{Port: tcpPort}, {Port: udpPort, UDP: true}}})
		if err != nil {
			t.Fatal(err)
		}

		f.announce(t, "s1", &managerv1.IncomingDial{ConnId: "c1", InterceptId: info.GetId()})
		conn, err := dialAccepted(t, waitAccepted(t, f), &managerv1.Dial{InterceptId: info.GetId()}, "tcp", netip.MustParseAddrPort("10.244.0.7:80"))
		if err != nil {
			t.Fatal(err)
		}
		// Left open on purpose: Close must end it.
		_, _ = conn.Write([]byte("x"))

		c, err := net.Dial("tcp", netip.AddrPortFrom(podLoopback, tcpPort).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("y"))
		buf := make([]byte, 10)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}

		u, err := net.Dial("udp", netip.AddrPortFrom(podLoopback, udpPort).String())
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		_, _ = u.Write([]byte("z"))
		_ = u.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := u.Read(buf); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSessionChangedBeforeRunLooked: the session changes between a create and Run's first look at
// the session; the intercept is still made again under the new one.
func TestSessionChangedBeforeRunLooked(t *testing.T) {
	f := newFakeManager(t)
	sess := newFakeSession(startManager(t, f), "s1")
	m, err := New(Config{Namespace: "app", MaxBackoff: 100 * time.Millisecond}, sess, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if _, err := m.Create(ctxT(t), Request{Name: "echo", LocalPort: 8080}); err != nil {
		t.Fatal(err)
	}
	sess.setID("s2")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !f.has("s2", "echo") {
		if time.Now().After(deadline) {
			t.Fatal("the intercept was not made again under the session that arrived before Run looked")
		}
		time.Sleep(20 * time.Millisecond) // polls the fake manager's record
	}
}
