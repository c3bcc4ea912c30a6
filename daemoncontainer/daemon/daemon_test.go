package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

type fakeSession struct {
	info   SessionInfo
	closed atomic.Int32
}

func (f *fakeSession) Info() SessionInfo { return f.info }
func (f *fakeSession) Close() error      { f.closed.Add(1); return nil }

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func startDaemon(t testing.TB, sess Session) *Daemon {
	t.Helper()
	return startDaemonWith(t, sess, &fakeIntercepts{})
}

func startDaemonWith(t testing.TB, sess Session, icpt Intercepts) *Daemon {
	t.Helper()
	d, err := New(Config{ListenAddr: "127.0.0.1:0", Token: testToken, Version: "v9"}, sess, icpt, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return d
}

func TestTokenAuth(t *testing.T) {
	d := startDaemon(t, &fakeSession{info: SessionInfo{State: "connected"}})
	conn, err := grpc.NewClient("passthrough:///"+d.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := daemonv1.NewDaemonClient(conn)

	tests := []struct {
		name   string
		header []string // authorization values; nil sends none
		want   codes.Code
	}{
		{name: "no header", want: codes.Unauthenticated},
		{name: "right token", header: []string{"Bearer " + testToken}, want: codes.OK},
		{name: "wrong token", header: []string{"Bearer " + testToken[1:] + "0"}, want: codes.Unauthenticated},
		{name: "short token", header: []string{"Bearer 0123"}, want: codes.Unauthenticated},
		{name: "empty token", header: []string{"Bearer "}, want: codes.Unauthenticated},
		{name: "other scheme", header: []string{"Basic " + testToken}, want: codes.Unauthenticated},
		{name: "bare token", header: []string{testToken}, want: codes.Unauthenticated},
		{name: "two headers", header: []string{"Bearer " + testToken, "Bearer x"}, want: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, h := range tt.header {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", h)
			}
			_, err := client.Status(ctx, &daemonv1.StatusRequest{})
			if got := status.Code(err); got != tt.want {
				t.Errorf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestDialSendsToken(t *testing.T) {
	sess := &fakeSession{info: SessionInfo{State: "connected", ID: "s1"}}
	d := startDaemon(t, sess)
	conn, err := Dial(d.Addr().String(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := daemonv1.NewDaemonClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	st, err := client.Status(ctx, &daemonv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSessionId() != "s1" || st.GetVersion() != "v9" {
		t.Errorf("status = %v", st)
	}

	if _, err := client.Quit(ctx, &daemonv1.QuitRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Quitting():
	case <-time.After(5 * time.Second):
		t.Fatal("Quitting not closed after Quit")
	}
	if n := sess.closed.Load(); n != 1 {
		t.Errorf("session closed %d times, want 1", n)
	}
}

func TestStatusResponse(t *testing.T) {
	cfg := Config{Version: "v1", Name: "default", KubeContext: "kind", Server: "https://127.0.0.1:6443", Namespace: "app", ManagerNamespace: "teledock"}
	cluster := &managerv1.ClusterInfoResponse{PodSubnets: []string{"10.244.0.0/16"}, ServiceSubnets: []string{"10.96.0.0/12"}, ClusterDomain: "cluster.local", DnsIp: "10.96.0.10"}
	mgr := &managerv1.VersionInfo{Version: "v2", AgentImage: "teledock/agent:v2"}
	net := &NetworkInfo{ResolverAddress: "127.0.0.1:53", SearchPath: []string{"app.svc.cluster.local"}, Timeout: 8 * time.Second}

	tests := []struct {
		name       string
		info       SessionInfo
		network    *NetworkInfo
		networkErr error
		check      func(t *testing.T, r *daemonv1.StatusResponse)
	}{
		{
			name: "connecting, nothing known",
			info: SessionInfo{State: "connecting", LastError: "no manager", ErrorCode: daemonv1.ErrorCode_ERROR_CODE_NO_MANAGER},
			check: func(t *testing.T, r *daemonv1.StatusResponse) {
				if r.GetDns() != nil || r.GetManager() != nil || r.GetNetworkReady() {
					t.Errorf("unexpected parts: %v", r)
				}
				if r.GetLastErrorCode() != daemonv1.ErrorCode_ERROR_CODE_NO_MANAGER || r.GetConnectionName() != "default" {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name:    "connected with network",
			info:    SessionInfo{State: "connected", ID: "s1", Cluster: cluster, Manager: mgr},
			network: net,
			check: func(t *testing.T, r *daemonv1.StatusResponse) {
				if !r.GetNetworkReady() || !r.GetManager().GetConnected() || r.GetManager().GetAgentImage() != "teledock/agent:v2" {
					t.Errorf("got %v", r)
				}
				if r.GetDns().GetTimeoutMs() != 8000 || r.GetDns().GetDnsIp() != "10.96.0.10" || r.GetDns().GetResolverAddress() != "127.0.0.1:53" {
					t.Errorf("dns = %v", r.GetDns())
				}
				if len(r.GetPodSubnets()) != 1 || len(r.GetServiceSubnets()) != 1 {
					t.Errorf("subnets = %v %v", r.GetPodSubnets(), r.GetServiceSubnets())
				}
			},
		},
		{
			name:       "network failed",
			info:       SessionInfo{State: "connected", ID: "s1", Cluster: cluster, Manager: mgr},
			networkErr: errors.New("built without netstack"),
			check: func(t *testing.T, r *daemonv1.StatusResponse) {
				if r.GetNetworkReady() || r.GetNetworkError() != "built without netstack" {
					t.Errorf("got %v", r)
				}
			},
		},
		{
			name: "reconnecting: manager not connected",
			info: SessionInfo{State: "reconnecting", ID: "s1", Cluster: cluster, Manager: mgr},
			check: func(t *testing.T, r *daemonv1.StatusResponse) {
				if r.GetManager().GetConnected() {
					t.Errorf("manager connected while reconnecting")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, statusResponse(cfg, tt.info, tt.network, tt.networkErr))
		})
	}
}

// slowRelay forwards connections to target, holding back the server's first bytes for delay, as
// a loaded docker-proxy in front of the daemon's port can.
func slowRelay(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() {
				defer wg.Done()
				time.Sleep(delay) // the slowness under test, not a wait for readiness
				_, _ = io.Copy(c, s)
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// The first call through Dial must survive a handshake slower than the reconnect backoff.
func TestDialWaitsForSlowHandshake(t *testing.T) {
	d := startDaemon(t, &fakeSession{info: SessionInfo{State: "connected", ID: "s1"}})
	conn, err := Dial(slowRelay(t, d.Addr().String(), 300*time.Millisecond), testToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := daemonv1.NewDaemonClient(conn).Status(ctx, &daemonv1.StatusRequest{}); err != nil {
		t.Fatalf("first call through a slow handshake: %v", err)
	}
}

func TestAllowPeer(t *testing.T) {
	for _, allowed := range []bool{true, false} {
		t.Run(fmt.Sprint("allowed=", allowed), func(t *testing.T) {
			var asked atomic.Value
			d, err := New(Config{ListenAddr: "127.0.0.1:0", Token: testToken, AllowPeer: func(a netip.Addr) bool {
				asked.Store(a)
				return allowed
			}}, &fakeSession{}, &fakeIntercepts{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			conn, err := Dial(d.Addr().String(), testToken)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer ccancel()
			_, err = daemonv1.NewDaemonClient(conn).Status(cctx, &daemonv1.StatusRequest{})
			if allowed != (err == nil) {
				t.Errorf("allowed=%v: Status error %v", allowed, err)
			}
			if a, _ := asked.Load().(netip.Addr); a != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("AllowPeer asked about %v, want 127.0.0.1", a)
			}
		})
	}
}
