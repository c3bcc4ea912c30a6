package tunnel

import (
	"context"
	"io"
	"net"
	"testing"

	"teledock.dev/teledock/internal/benchio"
)

// BenchmarkTCP pushes bytes through a real tunnel: a Conn, a gRPC connection over loopback TCP,
// the Server and its dialed TCP connection to a local destination. upload is Conn.Write to the
// destination, download the destination to Conn.Read. MB/s counts payload; allocations are per
// 128 KiB block, client and server together (they share this process). On 2 cores the client,
// server and destination compete for CPU, as the daemon, manager and a workload would.
func BenchmarkTCP(b *testing.B) {
	h := startHarness(b, harnessOpts{})
	b.Run("upload", func(b *testing.B) {
		benchio.Upload(b, func() io.ReadWriteCloser { return dialT(b, h, "tcp", benchio.Sink(b)) })
	})
	b.Run("download", func(b *testing.B) {
		benchio.Download(b, func() io.ReadWriteCloser { return dialT(b, h, "tcp", benchio.Source(b)) })
	})
}

// BenchmarkDirect compares the two ways a TCP flow crosses the direct port, both over TLS on
// loopback: a Tunnel stream (gRPC, HTTP/2, a protobuf message per chunk) and a raw tunnel (the
// flow's bytes in TLS records, one connection per flow).
func BenchmarkDirect(b *testing.B) {
	h := startHarness(b, harnessOpts{tls: true})
	_, rawDial := rawServer(b, newRawTestServer(b), "tok")
	raw := func(dst net.Addr) io.ReadWriteCloser {
		c := rawDial()
		if err := DialRaw(context.Background(), c, "tok", "s1", dst.(*net.TCPAddr).AddrPort()); err != nil {
			b.Fatal(err)
		}
		return c
	}
	b.Run("stream/upload", func(b *testing.B) {
		benchio.Upload(b, func() io.ReadWriteCloser { return dialT(b, h, "tcp", benchio.Sink(b)) })
	})
	b.Run("stream/download", func(b *testing.B) {
		benchio.Download(b, func() io.ReadWriteCloser { return dialT(b, h, "tcp", benchio.Source(b)) })
	})
	b.Run("raw/upload", func(b *testing.B) {
		benchio.Upload(b, func() io.ReadWriteCloser { return raw(benchio.Sink(b)) })
	})
	b.Run("raw/download", func(b *testing.B) {
		benchio.Download(b, func() io.ReadWriteCloser { return raw(benchio.Source(b)) })
	})
}
