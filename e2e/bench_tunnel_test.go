//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/flow"
	"teledock.dev/teledock/tunnel"
)

// startTunnelForwarder listens on 127.0.0.1 and carries every accepted connection to dst through
// teledock's tunnel (tunnel.Dial, tunnel.DialOptions) to the traffic-manager at managerAddr, in a
// session of its own in namespace ns. It is teledock's data path without the daemon's TUN and gVisor netstack,
// and with kubectl's local-listener model, so that rows measured through it tell the tunnel's
// cost (gRPC, the manager's relay) from the daemon's. It returns the local port and stops when
// the test ends.
func startTunnelForwarder(t testing.TB, managerAddr, ns string, dst netip.AddrPort) string {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+managerAddr,
		append(tunnel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	mgr := managerv1.NewManagerClient(cc)
	ctx, cancel := context.WithCancel(context.Background())
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	sess, err := mgr.ArriveClient(actx, &managerv1.ClientInfo{Name: "bench-tunnel", Namespace: ns, Hostname: "e2e", Version: cfg.version})
	acancel()
	if err != nil {
		cancel()
		cc.Close()
		t.Fatalf("arrive at the traffic-manager at %s: %v", managerAddr, err)
	}
	id := sess.GetSessionId()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		keepSession(ctx, mgr, id, time.Duration(sess.GetLeaseSeconds())*time.Second)
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				forwardThroughTunnel(ctx, mgr, id, c.(*net.TCPConn), dst)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = mgr.Depart(dctx, &managerv1.SessionRequest{SessionId: id})
		dcancel()
		cancel() // ends the tunnels, which unblocks their copies
		wg.Wait()
		cc.Close()
	})
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// keepSession renews the session's lease every third of it until ctx ends.
func keepSession(ctx context.Context, mgr managerv1.ManagerClient, id string, lease time.Duration) {
	t := time.NewTicker(max(lease/3, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = mgr.Remain(rctx, &managerv1.SessionRequest{SessionId: id})
			cancel()
		}
	}
}

// forwardThroughTunnel copies c to a tunnel to dst and back, with half-close, until both
// directions are done, either fails or ctx ends.
func forwardThroughTunnel(ctx context.Context, mgr managerv1.ManagerClient, id string, c *net.TCPConn, dst netip.AddrPort) {
	defer c.Close()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	tc, err := tunnel.Dial(dctx, mgr, id, "tcp", dst)
	cancel()
	if err != nil {
		return
	}
	defer tc.Close()
	stop := context.AfterFunc(ctx, func() { tc.Close(); c.Close() })
	defer stop()

	// The daemon's own copy primitive, so this row measures the same copies.
	_ = flow.Join(flow.Side{Name: "client", End: c}, flow.Side{Name: "tunnel", End: tc}, func() {
		flow.Reset(c)
		tc.Close()
	})
}
