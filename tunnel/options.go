package tunnel

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
)

// Flow-control windows and buffers for the HTTP/2 connection that carries tunnels.
//
// gRPC's defaults start every stream at a 64 KiB window and grow it by BDP estimation, one ping
// round trip at a time, so a short transfer over a link with latency never leaves slow start, and a
// long one needs many round trips to get there. A static window lets one stream reach
// streamWindow/RTT from its first byte: 16 MiB at 40 ms is ~400 MB/s, above what a port-forward
// carries (design.md: 78-97 MB/s), with room for the buffering inside the API server and kubelet
// that inflates the effective RTT. Memory: a stream buffers at most its window when its reader
// falls behind. BDP estimation grows windows to the same 16 MiB, so this does not raise the worst
// case, it only gets there at once. The connection window (replenished as data is read off the wire,
// not as streams consume it) is 4x so that several busy streams do not starve each other.
//
// Measured with TestThroughputMatrix (TELEDOCK_TUNNEL_BENCH=1): one stream, destination to client,
// loopback TCP through a delaying proxy, 2 cores shared with other builds (load average ~12, so
// numbers vary by 2x between runs), Go 1.26, grpc-go 1.85, 64 KiB chunks. MB/s for a 4 MiB
// transfer on a fresh connection / a 100 MiB transfer, two runs:
//
//	RTT    gRPC defaults        + 64 KiB buffers     static 4 MiB          static 16 MiB (chosen)
//	0      55-85 / 184-331      251-454 / 258-385    503-551 / 299-381     313-838 / 146-316
//	10 ms  26-29 / 103-199      21-29 / 146-168      247-358 / 203-217     395-473 / 122-231
//	40 ms  8-10 / 72-76         8-10 / 53-60         17-79 / 66            422-568 / 131-217
//
// On the real test cluster (one node, kubectl port-forward to the manager's Service, pod running
// e2e/images/echo, TestLiveManager): 100 MiB download 88-126 MB/s and upload 120-147 MB/s with these
// options on both ends; with gRPC's defaults on the client, download 62-67 MB/s.
//
// The 100 MiB transfer over loopback with no delay is CPU-bound (~150-350 MB/s under this load), so
// windows only matter once there is latency; 32, 64 and 128 KiB chunks were within the noise of each
// other, 64 KiB slightly ahead.
const (
	streamWindow = 16 << 20
	connWindow   = 64 << 20
	// ioBuffer sizes the transport's read and write buffers (default 32 KiB), so that one syscall
	// carries a whole 64 KiB chunk; it measured no worse than the default at every RTT.
	ioBuffer = 64 << 10
)

// keepalive: a client pings an idle connection every 30s so that a dead port-forward is noticed
// (and the session re-established) within 30s+10s rather than at the next write.
var (
	clientKeepalive = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}
	serverKeepalive = keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}
	// The enforcement policy must allow the client's pings, or the server answers them with GOAWAY
	// ("too_many_pings").
	serverEnforcement = keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}
)

// DialOptions returns client options tuned for tunnel throughput; add credentials and the like.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		experimental.WithBufferPool(bufferPool),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec)),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithWriteBufferSize(ioBuffer),
		grpc.WithKeepaliveParams(clientKeepalive),
	}
}

// ServerOptions returns server options tuned for tunnel throughput.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		experimental.BufferPool(bufferPool),
		grpc.ForceServerCodecV2(Codec),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer),
		grpc.WriteBufferSize(ioBuffer),
		grpc.KeepaliveParams(serverKeepalive),
		grpc.KeepaliveEnforcementPolicy(serverEnforcement),
	}
}
