package manager

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// Causes with which a session's context ends; tunnels of the session end with them as status.
var (
	errExpired  = status.Error(codes.NotFound, "session expired")
	errDeparted = status.Error(codes.NotFound, "session departed")
	errShutdown = status.Error(codes.Unavailable, "traffic-manager shutting down")
)

// session is one connected client. Its fields other than expires never change after arrival.
type session struct {
	id      string
	client  *managerv1.ClientInfo
	expires time.Time // guarded by Manager.mu
	// ctx ends when the session does; tunnels watch it.
	ctx context.Context
	end context.CancelCauseFunc
}

// ArriveClient opens a session for the client.
func (m *Manager) ArriveClient(_ context.Context, info *managerv1.ClientInfo) (*managerv1.Session, error) {
	if info.GetNamespace() == "" {
		return nil, status.Error(codes.InvalidArgument, "client info has no namespace")
	}
	ctx, end := context.WithCancelCause(context.Background())
	s := &session{
		id:      newSessionID(),
		client:  proto.CloneOf(info),
		expires: time.Now().Add(m.cfg.Lease),
		ctx:     ctx,
		end:     end,
	}
	m.mu.Lock()
	m.sessions[s.id] = s
	m.mu.Unlock()
	m.log.Info("client arrived", "session", s.id, "name", info.GetName(), "namespace", info.GetNamespace(),
		"hostname", info.GetHostname(), "version", info.GetVersion())
	return &managerv1.Session{SessionId: s.id, LeaseSeconds: int32(math.Ceil(m.cfg.Lease.Seconds()))}, nil
}

func newSessionID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand's contract since Go 1.24)
	return hex.EncodeToString(b[:])
}

// Remain renews a session's lease.
func (m *Manager) Remain(_ context.Context, req *managerv1.SessionRequest) (*managerv1.RemainResponse, error) {
	if err := checkID(req.GetSessionId()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[req.GetSessionId()]
	now := time.Now()
	if !ok || now.After(s.expires) {
		return nil, status.Error(codes.NotFound, "no such session (expired?); arrive again")
	}
	s.expires = now.Add(m.cfg.Lease)
	return &managerv1.RemainResponse{}, nil
}

// Depart ends a session. It is idempotent: departing an unknown or expired session succeeds, so a
// client may retry it.
func (m *Manager) Depart(_ context.Context, req *managerv1.SessionRequest) (*managerv1.DepartResponse, error) {
	if err := checkID(req.GetSessionId()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	s, ok := m.sessions[req.GetSessionId()]
	delete(m.sessions, req.GetSessionId())
	m.mu.Unlock()
	if ok {
		s.end(errDeparted)
		m.log.Info("client departed", "session", s.id, "name", s.client.GetName())
	}
	return &managerv1.DepartResponse{}, nil
}

// ListSessions lists the live sessions, soonest to expire first.
func (m *Manager) ListSessions(context.Context, *managerv1.ListSessionsRequest) (*managerv1.ListSessionsResponse, error) {
	now := time.Now()
	m.mu.Lock()
	out := make([]*managerv1.SessionSummary, 0, len(m.sessions))
	for _, s := range m.sessions {
		if now.After(s.expires) {
			continue
		}
		out = append(out, &managerv1.SessionSummary{
			SessionId:   s.id,
			Client:      proto.CloneOf(s.client),
			ExpiresUnix: s.expires.Unix(),
		})
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b *managerv1.SessionSummary) int {
		return cmp.Or(cmp.Compare(a.ExpiresUnix, b.ExpiresUnix), cmp.Compare(a.SessionId, b.SessionId))
	})
	return &managerv1.ListSessionsResponse{Sessions: out}, nil
}

// session returns the live session with id, or a gRPC status error: Unauthenticated without an id,
// NotFound for an unknown or expired one.
func (m *Manager) session(id string) (*session, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok || time.Now().After(s.expires) {
		return nil, status.Error(codes.NotFound, "no such session (expired?); arrive again")
	}
	return s, nil
}

func checkID(id string) error {
	if id == "" {
		return status.Error(codes.Unauthenticated, "no session id; call ArriveClient first")
	}
	return nil
}

// expire ends the sessions whose lease ran out.
func (m *Manager) expire() {
	now := time.Now()
	var gone []*session
	m.mu.Lock()
	for id, s := range m.sessions {
		if now.After(s.expires) {
			delete(m.sessions, id)
			gone = append(gone, s)
		}
	}
	m.mu.Unlock()
	for _, s := range gone {
		s.end(errExpired)
		m.log.Info("session expired", "session", s.id, "name", s.client.GetName())
	}
}

func (m *Manager) endAll() {
	m.mu.Lock()
	all := m.sessions
	m.sessions = make(map[string]*session)
	m.mu.Unlock()
	for _, s := range all {
		s.end(errShutdown)
	}
}
