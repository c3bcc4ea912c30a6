package direct

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// stubManager answers every Tunnel's and Accept's first message with a successful DialResult.
type stubManager struct {
	managerv1.UnimplementedManagerServer
}

func (stubManager) Tunnel(s managerv1.Manager_TunnelServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}})
}

func (stubManager) Accept(s managerv1.Manager_AcceptServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}})
}

func (stubManager) ArriveClient(context.Context, *managerv1.ClientInfo) (*managerv1.Session, error) {
	return &managerv1.Session{SessionId: "new"}, nil
}

// newGuarded serves a stub manager behind a Guard that knows two sessions' tokens.
func newGuarded(t testing.TB) *grpc.ClientConn {
	t.Helper()
	tokens := map[string]string{"token-a": "session-a", "token-b": "session-b"}
	g, err := New(func(tok string) (string, bool) { id, ok := tokens[tok]; return id, ok })
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(g.ServerOptions()...)
	managerv1.RegisterManagerServer(srv, stubManager{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///direct",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// dial opens a Tunnel and sends first; it returns the code of the answer.
func dial(ctx context.Context, c managerv1.ManagerClient, first *managerv1.TunnelMessage) codes.Code {
	s, err := c.Tunnel(ctx)
	if err != nil {
		return status.Code(err)
	}
	if err := s.Send(first); err != nil {
		_, err = s.Recv()
		return status.Code(err)
	}
	_, err = s.Recv()
	return status.Code(err)
}

func dialMsg(session string) *managerv1.TunnelMessage {
	return &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Dial{Dial: &managerv1.Dial{SessionId: session, Address: "10.0.0.1:80"}}}
}

func TestGuardTunnel(t *testing.T) {
	c := managerv1.NewManagerClient(newGuarded(t))
	tests := []struct {
		name    string
		token   string
		session string
		want    codes.Code
	}{
		{name: "own session", token: "token-a", session: "session-a", want: codes.OK},
		{name: "missing token", token: "", session: "session-a", want: codes.Unauthenticated},
		{name: "wrong token", token: "token-x", session: "session-a", want: codes.Unauthenticated},
		{name: "other session's token", token: "token-b", session: "session-a", want: codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if got := dial(withToken(ctx, tt.token), c, dialMsg(tt.session)); got != tt.want {
				t.Errorf("dial = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGuardAcceptOfOtherSession(t *testing.T) {
	c := managerv1.NewManagerClient(newGuarded(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Accept(withToken(ctx, "token-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: "session-b", ConnId: "1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("accept for another session: %v, want PermissionDenied", err)
	}
}

func TestGuardMethods(t *testing.T) {
	conn := newGuarded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Control calls stay on the port-forward, even with a valid token.
	_, err := managerv1.NewManagerClient(conn).ArriveClient(withToken(ctx, "token-a"), &managerv1.ClientInfo{Namespace: "default"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("ArriveClient on the direct port: %v, want PermissionDenied", err)
	}
	// The probe needs a token too.
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("health check without a token: %v, want Unauthenticated", err)
	}
	if _, err := hc.Check(withToken(ctx, "token-b"), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check with a token: %v", err)
	}
}

// TestGuardAcceptNeedsToken: the Accept stream (connections out of the cluster to the client)
// is refused without a session's token, as Tunnel is.
func TestGuardAcceptNeedsToken(t *testing.T) {
	c := managerv1.NewManagerClient(newGuarded(t))
	for _, tt := range []struct {
		name, token string
		want        codes.Code
	}{
		{name: "own session", token: "token-a", want: codes.OK},
		{name: "missing token", want: codes.Unauthenticated},
		{name: "wrong token", token: "token-x", want: codes.Unauthenticated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := c.Accept(withToken(ctx, tt.token))
			if err == nil {
				err = s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: "session-a", ConnId: "1"}}})
			}
			// A refused stream may already be closed when Send runs: io.EOF, and Recv has the status.
			if err == nil || errors.Is(err, io.EOF) {
				_, err = s.Recv()
			}
			if got := status.Code(err); got != tt.want {
				t.Errorf("accept: %v, want %v", err, tt.want)
			}
		})
	}
}
