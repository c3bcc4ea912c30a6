// Package managertest is an in-memory traffic-manager for the agent's tests: it serves the agent's
// RPCs over a bufconn listener, and lets a test play the manager (targets, --to-pod dials, expired
// sessions) and the developer (the far end of intercepted connections).
package managertest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// Lease is the lease the fake gives every session: short, so that tests see several heartbeats.
const Lease = 3

// Manager is the fake traffic-manager. Start it with Start; it stops when the test ends.
type Manager struct {
	managerv1.UnimplementedManagerServer

	log *slog.Logger
	lis *bufconn.Listener

	// Dials receives the Dial of every AgentTunnel stream, before the developer is dialed.
	Dials chan *managerv1.Dial
	// Accepts receives every Accept stream the agent opens, after its Accept message.
	Accepts chan *Accepted

	mu        sync.Mutex // guards the following
	next      int
	sessions  map[string]bool
	arrivals  []*managerv1.AgentInfo
	tokens    []string // the authorization metadata of each arrival
	departed  []string
	remains   int
	targets   []*managerv1.AgentTarget
	watches   map[*watch]bool
	developer string // where AgentTunnel connections are delivered; "" refuses them
	// developers overrides developer for the intercepts it names.
	developers map[string]string
	reports    []*managerv1.AgentCounters
}

type watch struct {
	session string
	updates chan *managerv1.AgentUpdate
	end     chan error
}

// Start serves a fake manager until the test ends.
func Start(tb testing.TB) *Manager {
	tb.Helper()
	m := &Manager{
		log:      Logger(tb),
		lis:      bufconn.Listen(1 << 20),
		Dials:    make(chan *managerv1.Dial, 64),
		Accepts:  make(chan *Accepted, 64),
		sessions: make(map[string]bool),
		watches:  make(map[*watch]bool),
	}
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	managerv1.RegisterManagerServer(srv, m)
	go func() { _ = srv.Serve(m.lis) }()
	tb.Cleanup(func() {
		srv.Stop()
		m.lis.Close()
	})
	return m
}

// Dial connects to the fake; it is the agent's manager dialer in tests.
func (m *Manager) Dial(ctx context.Context, _ string) (net.Conn, error) {
	return m.lis.DialContext(ctx)
}

// SetDeveloper makes intercepted connections go to addr (host:port), as a developer's machine
// would deliver them.
func (m *Manager) SetDeveloper(addr string) {
	m.mu.Lock()
	m.developer = addr
	m.mu.Unlock()
}

// SetDeveloperFor makes the connections of one intercept go to addr instead of SetDeveloper's.
func (m *Manager) SetDeveloperFor(interceptID, addr string) {
	m.mu.Lock()
	if m.developers == nil {
		m.developers = make(map[string]string)
	}
	m.developers[interceptID] = addr
	m.mu.Unlock()
}

// Reports are the ReportCounters calls received, oldest first.
func (m *Manager) Reports() []*managerv1.AgentCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*managerv1.AgentCounters, len(m.reports))
	for i, r := range m.reports {
		out[i] = proto.CloneOf(r)
	}
	return out
}

// ReportCounters records the report.
func (m *Manager) ReportCounters(_ context.Context, req *managerv1.AgentCounters) (*managerv1.ReportCountersResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.sessions[req.GetSessionId()] {
		return nil, status.Error(codes.NotFound, "no such session")
	}
	m.reports = append(m.reports, proto.CloneOf(req))
	return &managerv1.ReportCountersResponse{}, nil
}

// SetTargets changes the agent's state and sends it to every watch.
func (m *Manager) SetTargets(targets ...*managerv1.AgentTarget) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.targets = targets
	for w := range m.watches {
		w.updates <- &managerv1.AgentUpdate{Targets: cloneTargets(targets)}
	}
}

// SendDial asks the watching agents to accept a --to-pod connection.
func (m *Manager) SendDial(connID, interceptID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for w := range m.watches {
		w.updates <- &managerv1.AgentUpdate{Dial: &managerv1.IncomingDial{ConnId: connID, InterceptId: interceptID}}
	}
}

// Expire forgets a session, as a manager does when its lease runs out or it restarts: Remain and
// WatchAgent answer NotFound from then on.
func (m *Manager) Expire(session string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, session)
	for w := range m.watches {
		if w.session == session {
			endWatch(w, status.Error(codes.NotFound, "session expired"))
		}
	}
}

// BreakWatches ends every watch with Unavailable; the sessions live on.
func (m *Manager) BreakWatches() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for w := range m.watches {
		endWatch(w, status.Error(codes.Unavailable, "watch broken by the test"))
	}
}

// Arrivals are the agents that arrived, in order.
func (m *Manager) Arrivals() []*managerv1.AgentInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.arrivals)
}

// Departed are the sessions that departed, in order.
func (m *Manager) Departed() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.departed)
}

// Remains counts the successful heartbeats.
func (m *Manager) Remains() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.remains
}

// Watching lists the sessions that have a watch open, once per watch.
func (m *Manager) Watching() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for w := range m.watches {
		out = append(out, w.session)
	}
	slices.Sort(out)
	return out
}

// WaitFor polls cond until it holds, or fails the test after 10s.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (m *Manager) ArriveAgent(ctx context.Context, info *managerv1.AgentInfo) (*managerv1.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	m.tokens = append(m.tokens, strings.Join(md.Get("authorization"), ","))
	m.next++
	id := "agent-" + strconv.Itoa(m.next)
	m.sessions[id] = true
	m.arrivals = append(m.arrivals, proto.Clone(info).(*managerv1.AgentInfo))
	return &managerv1.Session{SessionId: id, LeaseSeconds: Lease}, nil
}

func (m *Manager) Remain(_ context.Context, req *managerv1.SessionRequest) (*managerv1.RemainResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.sessions[req.GetSessionId()] {
		return nil, status.Errorf(codes.NotFound, "session %q not found", req.GetSessionId())
	}
	m.remains++
	return &managerv1.RemainResponse{}, nil
}

func (m *Manager) Depart(_ context.Context, req *managerv1.SessionRequest) (*managerv1.DepartResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, req.GetSessionId())
	m.departed = append(m.departed, req.GetSessionId())
	return &managerv1.DepartResponse{}, nil
}

func (m *Manager) WatchAgent(req *managerv1.SessionRequest, stream grpc.ServerStreamingServer[managerv1.AgentUpdate]) error {
	m.mu.Lock()
	if !m.sessions[req.GetSessionId()] {
		m.mu.Unlock()
		return status.Errorf(codes.NotFound, "session %q not found", req.GetSessionId())
	}
	w := &watch{session: req.GetSessionId(), updates: make(chan *managerv1.AgentUpdate, 64), end: make(chan error, 1)}
	// A watch starts with the full state, as the real manager's does.
	w.updates <- &managerv1.AgentUpdate{Targets: cloneTargets(m.targets)}
	m.watches[w] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.watches, w)
		m.mu.Unlock()
	}()
	for {
		select {
		case u := <-w.updates:
			if err := stream.Send(u); err != nil {
				return err
			}
		case err := <-w.end:
			return err
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// AgentTunnel pairs the agent's connection with the developer at once: it plays both the
// manager and the client's Accept, using the tunnel's own server end.
func (m *Manager) AgentTunnel(stream grpc.BidiStreamingServer[managerv1.TunnelMessage, managerv1.TunnelMessage]) error {
	srv, err := tunnel.NewServer(tunnel.ServerConfig{Target: m.developerTarget}, (&net.Dialer{}).DialContext, m.log)
	if err != nil {
		return err
	}
	return srv.Serve(stream)
}

func (m *Manager) developerTarget(d *managerv1.Dial) (string, string, error) {
	select {
	case m.Dials <- proto.Clone(d).(*managerv1.Dial):
	default: // a test that does not read them
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.sessions[d.GetSessionId()] {
		return "", "", fmt.Errorf("session %q not found", d.GetSessionId())
	}
	dev := cmp.Or(m.developers[d.GetInterceptId()], m.developer)
	if dev == "" {
		return "", "", errors.New("no developer")
	}
	return cmp.Or(tunnel.NetworkOf(d.GetProtocol()), "tcp"), dev, nil
}

// Accepted is an Accept stream the agent opened. The test plays the initiator on it: Dial, then
// data; the handler returns when the test calls Done or the agent ends the stream.
type Accepted struct {
	Accept *managerv1.Accept
	stream grpc.BidiStreamingServer[managerv1.TunnelMessage, managerv1.TunnelMessage]
	done   chan struct{}
	once   sync.Once
}

func (m *Manager) Accept(stream grpc.BidiStreamingServer[managerv1.TunnelMessage, managerv1.TunnelMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	acc := first.GetAccept()
	if acc == nil {
		return status.Errorf(codes.InvalidArgument, "first message is %T, not an Accept", first.GetMsg())
	}
	a := &Accepted{Accept: acc, stream: stream, done: make(chan struct{})}
	select {
	case m.Accepts <- a:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	select {
	case <-a.done:
	case <-stream.Context().Done():
	}
	return nil
}

// Dial sends the initiator's Dial and returns the acceptor's DialResult.
func (a *Accepted) Dial(d *managerv1.Dial) (*managerv1.DialResult, error) {
	if err := a.stream.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Dial{Dial: d}}); err != nil {
		return nil, err
	}
	msg, err := a.stream.Recv()
	if err != nil {
		return nil, err
	}
	if msg.GetDialResult() == nil {
		return nil, fmt.Errorf("got %T, want a DialResult", msg.GetMsg())
	}
	return msg.GetDialResult(), nil
}

// Write sends payload as one Data message, half-closing after it when closeWrite is set.
func (a *Accepted) Write(payload []byte, closeWrite bool) error {
	return a.stream.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{
		Data: &managerv1.Data{Payload: payload, CloseWrite: closeWrite}}})
}

// Read receives one Data message: for UDP, one datagram.
func (a *Accepted) Read() (*managerv1.Data, error) {
	msg, err := a.stream.Recv()
	if err != nil {
		return nil, err
	}
	if msg.GetData() == nil {
		return nil, fmt.Errorf("got %T, want Data", msg.GetMsg())
	}
	return msg.GetData(), nil
}

// ReadAll receives Data until the acceptor half-closes or ends the stream.
func (a *Accepted) ReadAll() ([]byte, error) {
	var buf bytes.Buffer
	for {
		msg, err := a.stream.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return buf.Bytes(), err
		}
		d := msg.GetData()
		if d == nil {
			return buf.Bytes(), fmt.Errorf("got %T, want Data", msg.GetMsg())
		}
		buf.Write(d.GetPayload())
		if d.GetCloseWrite() {
			return buf.Bytes(), nil
		}
	}
}

// Done ends the handler of the stream.
func (a *Accepted) Done() { a.once.Do(func() { close(a.done) }) }

// endWatch ends w with err unless it is already ending.
func endWatch(w *watch, err error) {
	select {
	case w.end <- err:
	default:
	}
}

func cloneTargets(ts []*managerv1.AgentTarget) []*managerv1.AgentTarget {
	out := make([]*managerv1.AgentTarget, len(ts))
	for i, t := range ts {
		out[i] = proto.Clone(t).(*managerv1.AgentTarget)
	}
	return out
}

// Logger logs to tb until the test ends, and drops what comes after: goroutines that outlive a
// test by a moment must not make it panic.
func Logger(tb testing.TB) *slog.Logger {
	w := &tbWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct {
	tb   testing.TB
	mu   sync.Mutex // guards done
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// Tokens returns the authorization metadata each arrival carried, in order.
func (m *Manager) Tokens() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.tokens)
}
