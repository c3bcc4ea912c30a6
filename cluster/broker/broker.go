// Package broker pairs the stream of a connection that one party starts through the manager with
// the Accept stream of the party that must take it, and copies between the two.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// DefaultAcceptTimeout is how long a connection waits for its acceptor's Accept stream.
const DefaultAcceptTimeout = 10 * time.Second

// queueLen is how many messages wait between one stream's Recv and the other's Send. gRPC's
// flow control does the real buffering; a few messages only keep both sides busy.
const queueLen = 8

var (
	// ErrUnknownConn means an Accept names a connection that is not waiting: it was never
	// offered, was already accepted, or timed out.
	ErrUnknownConn = errors.New("no connection waits for this accept (timed out?)")
	// ErrWrongAcceptor means a session accepts a connection that was offered to another one.
	ErrWrongAcceptor = errors.New("connection offered to another session")
	// ErrProtocol means a party broke the paired-connection protocol.
	ErrProtocol = errors.New("paired connection protocol violation")
	// ErrPeer is wrapped by the error a stream ends with when the other party's stream failed.
	ErrPeer = errors.New("the other end of the connection failed")
)

// Stream is the manager's side of a Tunnel, AgentTunnel or Accept call. The broker receives and
// sends *tunnel.Frame: served with tunnel.ServerOptions, a chunk passes through without being
// decoded, copied or encoded again.
type Stream interface {
	SendMsg(any) error
	RecvMsg(any) error
	Context() context.Context
}

// Config tunes a Broker. The zero value is usable.
type Config struct {
	// AcceptTimeout bounds the wait for the acceptor's Accept. Zero means DefaultAcceptTimeout.
	AcceptTimeout time.Duration
}

// Broker pairs initiators with acceptors. Its methods are called from gRPC handlers; every
// goroutine it starts ends with the streams it serves.
type Broker struct {
	cfg Config
	log *slog.Logger

	active atomic.Int64

	mu      sync.Mutex // mu guards pending
	pending map[string]*offer
}

// offer is a connection waiting for its acceptor.
type offer struct {
	acceptor  string // the session that must accept
	dial      *managerv1.Dial
	initiator *end
	// accepted receives the pipe when the acceptor arrives; buffered, so Accept never blocks on it.
	accepted chan *pipe
}

// New returns a Broker that logs to log.
func New(cfg Config, log *slog.Logger) (*Broker, error) {
	if log == nil {
		return nil, errors.New("broker: nil logger")
	}
	if cfg.AcceptTimeout <= 0 {
		cfg.AcceptTimeout = DefaultAcceptTimeout
	}
	return &Broker{cfg: cfg, log: log, pending: make(map[string]*offer)}, nil
}

// Active reports how many streams (initiators and acceptors) the broker serves.
func (b *Broker) Active() int64 { return b.active.Load() }

// Waiting reports whether the connection still waits for its Accept; a queued IncomingDial for a
// connection that no longer waits is stale.
func (b *Broker) Waiting(connID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.pending[connID]
	return ok
}

// Offer describes a connection for Initiate.
type Offer struct {
	// Dial is the initiator's first message; the acceptor gets it as its first message.
	Dial *managerv1.Dial
	// Acceptor is the session that must accept the connection.
	Acceptor string
	// Notify asks the acceptor to open an Accept stream for the IncomingDial. An error means the
	// acceptor cannot be reached; the initiator is refused at once.
	Notify func(*managerv1.IncomingDial) error
	// Life is the initiator's session: when it ends, so does the connection, with its cause.
	// Nil means the stream's context alone.
	Life context.Context
}

// Initiate serves the stream of a party that starts a connection, whose first message (o.Dial)
// was already read. It offers the connection to the acceptor and waits for its Accept, at most
// AcceptTimeout or the dial's own timeout_ms. An acceptor that does not come, or cannot be
// notified, gets the initiator a DialResult with ok=false (TIMEOUT or UNREACHABLE) and Initiate
// returns nil, as a failed dial does in the tunnel. Once paired, it copies until the connection
// ends (see pipe).
func (b *Broker) Initiate(stream Stream, o Offer) error {
	b.active.Add(1)
	defer b.active.Add(-1)
	life := o.Life
	if life == nil {
		life = stream.Context()
	}
	id := newConnID()
	of := &offer{
		acceptor:  o.Acceptor,
		dial:      o.Dial,
		initiator: &end{role: roleInitiator, stream: stream, life: life},
		accepted:  make(chan *pipe, 1),
	}
	log := b.log.With("conn", id, "intercept", o.Dial.GetInterceptId(), "acceptor", o.Acceptor)

	b.mu.Lock()
	b.pending[id] = of
	b.mu.Unlock()
	if err := o.Notify(&managerv1.IncomingDial{ConnId: id, InterceptId: o.Dial.GetInterceptId()}); err != nil {
		if p, withdrawn := b.withdraw(id, of); !withdrawn {
			return p.run(of.initiator) // accepted although the notification failed
		}
		log.Debug("acceptor not notified", "error", err)
		return tunnel.Refuse(stream, managerv1.DialError_DIAL_ERROR_UNREACHABLE, fmt.Sprintf("cannot reach the acceptor: %v", err))
	}

	wait := b.cfg.AcceptTimeout
	if ms := o.Dial.GetTimeoutMs(); ms > 0 {
		wait = min(wait, time.Duration(ms)*time.Millisecond)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var cause error
	select {
	case p := <-of.accepted:
		return p.run(of.initiator)
	case <-timer.C:
	case <-stream.Context().Done():
		cause = context.Cause(stream.Context())
	case <-life.Done():
		cause = context.Cause(life)
	}
	if p, withdrawn := b.withdraw(id, of); !withdrawn {
		return p.run(of.initiator) // the Accept won the race; the pipe ends at once if we are gone
	}
	if cause != nil {
		return cause
	}
	log.Debug("connection not accepted in time", "wait", wait)
	return tunnel.Refuse(stream, managerv1.DialError_DIAL_ERROR_TIMEOUT, fmt.Sprintf("not accepted within %v", wait))
}

// withdraw removes a waiting offer and reports whether it was still waiting. When the acceptor
// took it first, it returns the pipe (which is in the channel already, or is about to be).
func (b *Broker) withdraw(id string, of *offer) (p *pipe, withdrawn bool) {
	b.mu.Lock()
	_, waiting := b.pending[id]
	delete(b.pending, id)
	b.mu.Unlock()
	if waiting {
		return nil, true
	}
	return <-of.accepted, false
}

// Accept serves an acceptor's stream whose first message, Accept{session_id, conn_id}, was already
// read: it checks that the connection waits for this session, forwards the initiator's Dial, and
// copies until the connection ends. life is the acceptor's session.
func (b *Broker) Accept(stream Stream, sessionID, connID string, life context.Context) error {
	b.active.Add(1)
	defer b.active.Add(-1)
	if life == nil {
		life = stream.Context()
	}
	b.mu.Lock()
	of, ok := b.pending[connID]
	if ok && of.acceptor != sessionID {
		b.mu.Unlock()
		return fmt.Errorf("accept %s: %w", connID, ErrWrongAcceptor)
	}
	delete(b.pending, connID)
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("accept %s: %w", connID, ErrUnknownConn)
	}

	p := newPipe(of.initiator, &end{role: roleAcceptor, stream: stream, life: life}, b.log.With("conn", connID))
	// The acceptor's first message is the initiator's Dial; the queue has room for it.
	p.acceptor.out <- tunnel.NewFrame(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Dial{Dial: of.dial}})
	of.accepted <- p
	return p.run(p.acceptor)
}

func newConnID() string {
	var b [12]byte
	rand.Read(b[:]) // never fails (crypto/rand's contract since Go 1.24)
	return hex.EncodeToString(b[:])
}
