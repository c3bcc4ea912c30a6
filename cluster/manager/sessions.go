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
	// errSuperseded ends a session when the same client (connection name, host, user) arrives again.
	errSuperseded = status.Error(codes.NotFound, "session replaced by a newer connection of the same name from the same host")
	errShutdown   = status.Error(codes.Unavailable, "traffic-manager shutting down")
)

// dialQueueLen bounds the IncomingDials waiting for a session to take them; a session that lets
// this many pile up is not accepting, and further connections are refused at once.
const dialQueueLen = 64

// session is one connected client or traffic-agent. Its fields other than expires never change
// after arrival.
type session struct {
	id      string
	client  *managerv1.ClientInfo // set for clients
	agent   *agent                // set for traffic-agents
	expires time.Time             // guarded by Manager.mu
	// ctx ends when the session does; tunnels watch it.
	ctx context.Context
	end context.CancelCauseFunc
	// token is the hash of the session's direct-port token (see DirectInfo); guarded by Manager.mu.
	token tokenKey
	// dials queues the connections the session must accept (WatchDials, WatchAgent).
	dials chan *managerv1.IncomingDial
}

// name is how logs and messages call the session's party.
func (s *session) name() string {
	if s.agent != nil {
		return "agent " + s.agent.info.GetPodName()
	}
	return clientName(s.client)
}

// clientName is who owns a client's intercepts: user@host, as the seed shows it, or the connection
// name for a client that does not say its user.
func clientName(c *managerv1.ClientInfo) string {
	who := c.GetUser()
	if who == "" {
		who = c.GetName()
	}
	if c.GetHostname() == "" {
		return who
	}
	return who + "@" + c.GetHostname()
}

// ArriveClient opens a session for the client.
func (m *Manager) ArriveClient(_ context.Context, info *managerv1.ClientInfo) (*managerv1.Session, error) {
	if info.GetNamespace() == "" {
		return nil, status.Error(codes.InvalidArgument, "client info has no namespace")
	}
	m.supersede(info)
	s := m.open(proto.CloneOf(info), nil)
	m.log.Info("client arrived", "session", s.id, "name", info.GetName(), "namespace", info.GetNamespace(),
		"hostname", info.GetHostname(), "version", info.GetVersion())
	return m.sessionReply(s), nil
}

// supersede ends the sessions of the client that info names: the same connection name, host and
// user. One host runs one daemon per connection name, so an older session of the same client
// belongs to a daemon that died without departing (killed, or its Docker engine restarted); its
// intercepts would keep the cluster's traffic, and refuse the new session's intercepts, until its
// lease ran out. A client that does not say its name and host is never superseded.
func (m *Manager) supersede(info *managerv1.ClientInfo) {
	if info.GetName() == "" || info.GetHostname() == "" {
		return
	}
	var old []*session
	m.mu.Lock()
	for id, s := range m.sessions {
		c := s.client
		if c == nil || c.GetName() != info.GetName() || c.GetHostname() != info.GetHostname() || c.GetUser() != info.GetUser() {
			continue
		}
		old = append(old, s)
		delete(m.sessions, id)
		delete(m.tokens, s.token)
	}
	m.mu.Unlock()
	for _, s := range old {
		s.end(errSuperseded)
		m.log.Info("session superseded by a new one of the same client", "session", s.id, "name", s.name())
		m.ended(s, true)
	}
}

// open starts and stores a session for a client or an agent.
func (m *Manager) open(client *managerv1.ClientInfo, a *agent) *session {
	ctx, end := context.WithCancelCause(context.Background())
	s := &session{
		id:      newSessionID(),
		client:  client,
		agent:   a,
		expires: time.Now().Add(m.cfg.Lease),
		ctx:     ctx,
		end:     end,
		dials:   make(chan *managerv1.IncomingDial, dialQueueLen),
	}
	m.mu.Lock()
	m.sessions[s.id] = s
	m.mu.Unlock()
	return s
}

func (m *Manager) sessionReply(s *session) *managerv1.Session {
	return &managerv1.Session{SessionId: s.id, LeaseSeconds: int32(math.Ceil(m.cfg.Lease.Seconds()))}
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
	if ok {
		delete(m.tokens, s.token)
	}
	m.mu.Unlock()
	if ok {
		s.end(errDeparted)
		m.log.Info("session departed", "session", s.id, "name", s.name())
		m.ended(s, true)
	}
	return &managerv1.DepartResponse{}, nil
}

// ListSessions lists the live client sessions, soonest to expire first. Agents' sessions are not
// listed: a SessionSummary describes a client.
func (m *Manager) ListSessions(context.Context, *managerv1.ListSessionsRequest) (*managerv1.ListSessionsResponse, error) {
	now := time.Now()
	m.mu.Lock()
	out := make([]*managerv1.SessionSummary, 0, len(m.sessions))
	for _, s := range m.sessions {
		if now.After(s.expires) || s.client == nil {
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

// clientSession is session for the RPCs only clients may call.
func (m *Manager) clientSession(id string) (*session, error) {
	s, err := m.session(id)
	if err == nil && s.client == nil {
		return nil, status.Error(codes.PermissionDenied, "a traffic-agent's session cannot do this")
	}
	return s, err
}

// agentSession is session for the RPCs only agents may call.
func (m *Manager) agentSession(id string) (*session, error) {
	s, err := m.session(id)
	if err == nil && s.agent == nil {
		return nil, status.Error(codes.PermissionDenied, "only a traffic-agent's session can do this")
	}
	return s, err
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
			delete(m.tokens, s.token)
			gone = append(gone, s)
		}
	}
	m.mu.Unlock()
	for _, s := range gone {
		s.end(errExpired)
		m.log.Info("session expired", "session", s.id, "name", s.name())
		m.ended(s, true)
	}
}

// endAll ends every session at shutdown. Their intercepts go, but the workloads are left as
// they are: the next manager finds the clients coming back, and restores what they do not
// claim again (see Run).
func (m *Manager) endAll() {
	m.mu.Lock()
	all := m.sessions
	m.sessions = make(map[string]*session)
	m.tokens = make(map[tokenKey]*session)
	m.mu.Unlock()
	for _, s := range all {
		s.end(errShutdown)
		m.ended(s, false)
	}
}

// ended cleans up after a session that was removed: a client's intercepts go, and with them a
// --replace's placeholder (when restore is set); an agent leaves its workload.
func (m *Manager) ended(s *session, restore bool) {
	if s.client != nil {
		m.removeSessionIntercepts(s, restore)
	}
	m.changes.notify()
}
