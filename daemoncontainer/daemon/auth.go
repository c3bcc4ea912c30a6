package daemon

import (
	"context"
	"crypto/subtle"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The API is published on the host's loopback only, but every local user and every container with
// host networking can reach that port; the per-connection token is what keeps them out.

const bearerPrefix = "Bearer "

// tokenAuth checks "authorization: Bearer <token>" on every call.
type tokenAuth struct{ token []byte }

func (a tokenAuth) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return status.Error(codes.Unauthenticated, "missing token")
	}
	got, ok := strings.CutPrefix(vals[0], bearerPrefix)
	// ConstantTimeCompare returns early only on a length mismatch, which reveals nothing useful:
	// every token has the same length.
	if !ok || subtle.ConstantTimeCompare([]byte(got), a.token) != 1 {
		return status.Error(codes.Unauthenticated, "invalid token")
	}
	return nil
}

func (a tokenAuth) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a tokenAuth) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

// bearer sends the token with every call. The daemon listens on loopback without TLS, so the
// credentials must not demand transport security.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": bearerPrefix + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = bearer("")

// Dial returns a client connection to a daemon's API at addr (host:port) that sends token with
// every call. It does not connect until the first call.
func Dial(addr, token string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(token)),
		// The CLI dials while the daemon is still starting; gRPC's default 1 s first backoff then
		// made every connect a second slower than the daemon (measured by make bench).
		// MinConnectTimeout must be set with the backoff: left zero, gRPC gives each attempt only
		// the backoff delay (~50 ms) to finish its handshake, and a busy machine's docker-proxy
		// took longer, so a call failed with "error reading server preface" (seen in CI).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
			},
			MinConnectTimeout: 10 * time.Second,
		}),
	}, opts...)
	return grpc.NewClient("passthrough:///"+addr, opts...)
}
