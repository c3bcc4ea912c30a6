package broker

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/benchio"
	"teledock.dev/teledock/tunnel"
)

// BenchmarkPaired pushes bytes through an intercepted connection as in the cluster: the agent's
// tunnel.Conn, the broker's pipe, and the client's acceptor (tunnel.Server.Accept) with its TCP
// connection to a local destination; both parties share one gRPC connection over loopback TCP.
// upload is agent to destination, download destination to agent. MB/s counts payload;
// allocations are per 128 KiB block, all three parties together.
func BenchmarkPaired(b *testing.B) {
	h := startLoopback(b, Config{}, &pairService{})
	b.Run("upload", func(b *testing.B) {
		benchio.Upload(b, func() io.ReadWriteCloser { return h.benchConn(b, benchio.Sink(b)) })
	})
	b.Run("download", func(b *testing.B) {
		benchio.Download(b, func() io.ReadWriteCloser { return h.benchConn(b, benchio.Source(b)) })
	})
}

// benchConn opens a paired connection whose acceptor dials dst.
func (h *harness) benchConn(b *testing.B, dst net.Addr) *tunnel.Conn {
	b.Helper()
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		Target: func(*managerv1.Dial) (string, string, error) { return "tcp", dst.String(), nil },
	}, (&net.Dialer{}).DialContext, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	watch, err := h.client.WatchDials(ctx, &managerv1.SessionRequest{SessionId: clientSession})
	if err != nil {
		b.Fatal(err)
	}
	wg.Go(func() {
		d, err := watch.Recv()
		if err != nil {
			return
		}
		open := func(ctx context.Context) (tunnel.AcceptStream, error) { return h.client.Accept(ctx) }
		if err := srv.Accept(ctx, open, &managerv1.Accept{SessionId: clientSession, ConnId: d.GetConnId()}); err != nil {
			b.Errorf("accept: %v", err)
		}
	})
	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	defer dcancel()
	c, err := h.dialAgent(dctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
