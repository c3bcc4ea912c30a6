// Package direct guards the traffic-manager's direct port (a TLS NodePort): a call passes only with
// a token the manager issued to a live session, only for the data-plane methods, and only for that
// session's streams.
//
// The token is handed out over the port-forward (Manager.DirectInfo), which the Kubernetes API
// server has already authorized, so the direct port admits no one who could not use the
// port-forward. Control calls (arrive, intercepts, DNS) stay on the port-forward.
package direct

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// Methods that the direct port serves: the tunnels (a client's flows and --to-pod connections),
// the accepted side of intercepted connections, and the health check that probes the port.
var allowed = map[string]bool{
	managerv1.Manager_Tunnel_FullMethodName: true,
	managerv1.Manager_Accept_FullMethodName: true,
	"/grpc.health.v1.Health/Check":          true,
}

// Lookup returns the session a token was issued to, if that session is alive.
type Lookup func(token string) (sessionID string, ok bool)

// Guard checks every call on the direct port; add its ServerOptions to the direct port's server.
type Guard struct {
	lookup Lookup
}

// New returns a Guard that admits the tokens lookup knows.
func New(lookup Lookup) (*Guard, error) {
	if lookup == nil {
		return nil, errors.New("direct: nil token lookup")
	}
	return &Guard{lookup: lookup}, nil
}

// ServerOptions are the interceptors that enforce the guard.
func (g *Guard) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.UnaryInterceptor(g.unary), grpc.StreamInterceptor(g.stream)}
}

// Errors the guard answers with; the client reports them as "direct transport refused".
var (
	errNoToken  = status.Error(codes.Unauthenticated, "direct port: no token")
	errBadToken = status.Error(codes.Unauthenticated, "direct port: unknown or expired token")
	errMethod   = status.Error(codes.PermissionDenied, "direct port: method not served here; use the port-forward")
	errSession  = status.Error(codes.PermissionDenied, "direct port: the token belongs to another session")
)

// authorize returns the session of the call's token.
func (g *Guard) authorize(ctx context.Context, method string) (string, error) {
	if !allowed[method] {
		return "", errMethod
	}
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) != 1 {
		return "", errNoToken
	}
	token, ok := strings.CutPrefix(auth[0], "Bearer ")
	if !ok {
		return "", errNoToken
	}
	return g.session(token)
}

// session returns the live session that token was issued to.
func (g *Guard) session(token string) (string, error) {
	if token == "" {
		return "", errNoToken
	}
	id, ok := g.lookup(token)
	if !ok {
		return "", errBadToken
	}
	return id, nil
}

// admitRaw checks a raw tunnel's hello: a live session's token, a Dial of that session, and no
// paired connection (those need the manager's pairing, over a Tunnel stream).
func (g *Guard) admitRaw(token string, d *managerv1.Dial) error {
	id, err := g.session(token)
	if err != nil {
		return err
	}
	if d.GetSessionId() != id {
		return errSession
	}
	if d.GetInterceptId() != "" {
		return errMethod
	}
	return nil
}

func (g *Guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id, err := g.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := checkSession(req, id); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (g *Guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	id, err := g.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &sessionStream{ServerStream: ss, id: id})
}

// sessionStream checks every message it receives: a Dial or Accept must name the token's session.
// The manager reads the session from those messages, so no other session's stream can pass.
type sessionStream struct {
	grpc.ServerStream
	id string
}

func (s *sessionStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkSession(m, s.id)
}

// checkSession refuses a message that names a session other than id.
func checkSession(m any, id string) error {
	var named string
	switch m := m.(type) {
	case *managerv1.TunnelMessage:
		switch {
		case m.GetDial() != nil:
			named = m.GetDial().GetSessionId()
		case m.GetAccept() != nil:
			named = m.GetAccept().GetSessionId()
		default:
			return nil // data carries no session
		}
	case interface{ GetSessionId() string }:
		named = m.GetSessionId()
	default:
		return nil
	}
	if named != id {
		return errSession
	}
	return nil
}
