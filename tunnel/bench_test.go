package tunnel

import (
	"io"
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
