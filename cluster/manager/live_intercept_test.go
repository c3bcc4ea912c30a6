package manager

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// TestLiveIntercept creates and removes an intercept through a deployed traffic-manager (see
// TestLiveManager). It runs only when TELEDOCK_TEST_MANAGER is set and TELEDOCK_TEST_INTERCEPT
// names a workload as NAMESPACE/NAME; TELEDOCK_TEST_INTERCEPT_PORT is its --port identifier,
// TELEDOCK_TEST_INTERCEPT_REPLACE=1 asks for --replace, and
// TELEDOCK_TEST_INTERCEPT_WAIT bounds the wait for the agent (default 30s). It logs a failed
// CreateIntercept rather than failing, so that it also shows why an agent does not arrive (for
// instance while the agent image is missing).
//
// With TELEDOCK_TEST_INTERCEPT_DIAL set to the intercepted service's ip:port (or "pod" for the
// pod address of a service-less intercept), it also sends an
// HTTP request there through a tunnel while intercepted (the agent must pass it to this client,
// which answers "intercepted") and after the intercept is removed (the app answers).
func TestLiveIntercept(t *testing.T) {
	addr, target := os.Getenv("TELEDOCK_TEST_MANAGER"), os.Getenv("TELEDOCK_TEST_INTERCEPT")
	if addr == "" || target == "" {
		t.Skip("set TELEDOCK_TEST_MANAGER and TELEDOCK_TEST_INTERCEPT=NAMESPACE/NAME")
	}
	namespace, name, ok := strings.Cut(target, "/")
	if !ok {
		t.Fatalf("TELEDOCK_TEST_INTERCEPT=%q, want NAMESPACE/NAME", target)
	}
	wait := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TELEDOCK_TEST_INTERCEPT_WAIT")); err == nil {
		wait = d
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		append(tunnel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := managerv1.NewManagerClient(cc)
	ctx := context.Background()
	s, err := client.ArriveClient(ctx, &managerv1.ClientInfo{Name: "live-test", Hostname: "imgr", Namespace: namespace})
	if err != nil {
		t.Fatal(err)
	}
	sid := s.GetSessionId()
	defer client.Depart(context.Background(), &managerv1.SessionRequest{SessionId: sid})

	wls, err := client.ListWorkloads(ctx, &managerv1.ListWorkloadsRequest{SessionId: sid})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range wls.GetWorkloads() {
		t.Logf("%s %s: %s", w.GetKind(), w.GetName(), w.GetState())
	}

	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	info, err := client.CreateIntercept(cctx, &managerv1.CreateInterceptRequest{
		SessionId: sid, Name: name, Port: os.Getenv("TELEDOCK_TEST_INTERCEPT_PORT"), LocalPort: 8080, Destination: "127.0.0.1:8080",
		Replace: os.Getenv("TELEDOCK_TEST_INTERCEPT_REPLACE") != "",
	})
	t.Logf("CreateIntercept after %v: %v, %v", time.Since(start).Round(time.Millisecond), info, err)
	if err != nil {
		return
	}
	dst := os.Getenv("TELEDOCK_TEST_INTERCEPT_DIAL")
	if dst == "pod" {
		dst = info.GetPodAddress()
	}
	if dst != "" {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go acceptIntercepted(t, wctx, client, sid)
		if got := httpGet(t, ctx, client, sid, dst); !strings.Contains(got, "intercepted") {
			t.Errorf("while intercepted, %s answered %q", dst, got)
		}
	}
	if _, err := client.RemoveIntercept(ctx, &managerv1.RemoveInterceptRequest{SessionId: sid, Name: name}); err != nil {
		t.Errorf("RemoveIntercept: %v", err)
	}
	if dst != "" {
		if got := httpGet(t, ctx, client, sid, dst); strings.Contains(got, "intercepted") {
			t.Errorf("after the intercept, %s answered %q", dst, got)
		}
	}
}

// httpGet sends GET / to dst through a tunnel and returns the response.
func httpGet(t *testing.T, ctx context.Context, client managerv1.ManagerClient, sid, dst string) string {
	t.Helper()
	start := time.Now()
	c, err := tunnel.Dial(ctx, client, sid, "tcp", netip.MustParseAddrPort(dst))
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	defer c.Close()
	stop := time.AfterFunc(10*time.Second, func() { c.Close() })
	defer stop.Stop()
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	c.CloseWrite()
	b, err := io.ReadAll(c)
	t.Logf("GET %s after %v: %q, %v", dst, time.Since(start).Round(time.Millisecond), b, err)
	return string(b)
}

// acceptIntercepted plays the developer's side: it accepts every connection the manager offers
// and answers it as a local HTTP server would, with "intercepted".
func acceptIntercepted(t *testing.T, ctx context.Context, client managerv1.ManagerClient, sid string) {
	w, err := client.WatchDials(ctx, &managerv1.SessionRequest{SessionId: sid})
	if err != nil {
		t.Errorf("WatchDials: %v", err)
		return
	}
	for {
		d, err := w.Recv()
		if err != nil {
			return
		}
		go func() {
			s, err := client.Accept(ctx)
			if err != nil {
				return
			}
			s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: sid, ConnId: d.GetConnId()}}})
			m, err := s.Recv()
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			t.Logf("accepted %v", m.GetDial())
			s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}})
			var req []byte
			for !bytes.Contains(req, []byte("\r\n\r\n")) {
				m, err := s.Recv()
				if err != nil {
					return
				}
				req = append(req, m.GetData().GetPayload()...)
				if m.GetData().GetCloseWrite() {
					break
				}
			}
			body := "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nintercepted\n"
			s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{Data: &managerv1.Data{Payload: []byte(body), CloseWrite: true}}})
			s.CloseSend()
			for {
				if _, err := s.Recv(); err != nil {
					return
				}
			}
		}()
	}
}
