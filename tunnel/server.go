package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// DialFunc dials a destination for a tunnel; (*net.Dialer).DialContext is one.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// ServerStream is the far end's side of a tunnel: the manager's Tunnel handler, or the client side
// of an Accept call (a client or agent accepting a paired connection).
type ServerStream interface {
	Send(*managerv1.TunnelMessage) error
	Recv() (*managerv1.TunnelMessage, error)
	SendMsg(any) error
	RecvMsg(any) error
	Context() context.Context
}

// ServerConfig tunes a Server. The zero value is usable.
type ServerConfig struct {
	// Target, when set, decides what a Dial connects to (network "tcp" or "udp", and an address),
	// instead of the Dial's own address: acceptors of paired connections map the intercept to their
	// local destination.
	Target func(*managerv1.Dial) (network, address string, err error)
	// Authorize, when set, vets the session of a Dial before anything is dialed. A non-nil error ends
	// the stream with that error as its status, so it should be a gRPC status error. The returned
	// context, if not nil, is the session's lifetime: when it ends, so does the tunnel, with
	// context.Cause of it as the stream's status.
	Authorize func(ctx context.Context, sessionID string) (context.Context, error)
	// DialTimeout bounds a dial whose request carries no timeout. Default 10s.
	DialTimeout time.Duration
	// UDPIdleTimeout ends a UDP flow that carried no datagram either way for this long. Default 60s,
	// between Linux conntrack's timeouts for unreplied (30s) and replied (120s) UDP flows.
	UDPIdleTimeout time.Duration
}

// Server is the far end of tunnels: it dials what clients ask for and copies both ways.
//
// A stream served by Serve ends when:
//   - the client cancels it (Conn.Close, or its connection drops): Recv fails, the dialed
//     connection is closed, and Serve returns the client's error;
//   - the dial fails: a DialResult with ok=false and a reason is sent and Serve returns nil;
//   - Authorize refuses the session: Serve returns its error before dialing;
//   - the session's context (from Authorize) ends: the dialed connection is closed and Serve
//     returns the context's cause;
//   - TCP, both halves closed: the client sent close_write (or CloseSend) and the dialed connection
//     reached EOF (close_write sent to the client); Serve returns nil;
//   - a read or write error on either side: the dialed connection is closed and Serve returns the
//     error tagged with its direction; the client sees it as the stream's status;
//   - UDP, idle: no datagram either way for UDPIdleTimeout; close_write is sent (the client reads
//     EOF) and Serve returns nil once the client has ended its side, or ErrIdleUnanswered;
//   - UDP, the client sent close_write or CloseSend: Serve returns nil;
//   - server shutdown: grpc.Server.Stop cancels the stream's context, which ends it as a client
//     cancel does. GracefulStop alone waits for tunnels, so callers should bound it and then Stop.
type Server struct {
	dial DialFunc
	log  *slog.Logger
	cfg  ServerConfig

	active atomic.Int64
}

// NewServer returns a Server that dials with dial and logs to log.
func NewServer(cfg ServerConfig, dial DialFunc, log *slog.Logger) (*Server, error) {
	if dial == nil {
		return nil, errors.New("tunnel: nil DialFunc")
	}
	if log == nil {
		return nil, errors.New("tunnel: nil logger")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = 60 * time.Second
	}
	return &Server{dial: dial, log: log, cfg: cfg}, nil
}

// Serve serves one tunnel stream with a default ServerConfig; see Server for how it ends.
func Serve(stream ServerStream, dial DialFunc, log *slog.Logger) error {
	s, err := NewServer(ServerConfig{}, dial, log)
	if err != nil {
		return err
	}
	return s.Serve(stream)
}

// Active reports how many tunnels are being served.
func (s *Server) Active() int64 { return s.active.Load() }

// Serve serves one tunnel stream: it reads the Dial, dials, answers, and copies until the stream
// ends (see Server).
func (s *Server) Serve(stream ServerStream) error {
	_, err := s.serve(stream)
	return err
}

// AcceptStream is the acceptor's side of the manager's Accept call.
type AcceptStream interface {
	ServerStream
	CloseSend() error
}

// Accept serves one paired connection (an intercepted connection, a --to-pod one) as its
// acceptor: it opens a stream with open, names the connection with accept, serves the Dial the
// manager forwards on it (Serve), and ends the stream. ctx ends the connection at any time.
//
// After a clean Serve (a refused dial, both TCP halves closed) what is still in flight — the
// refusal, the last bytes, the half-close — would be reset by cancelling the stream at once, so
// Accept closes its side and waits for the manager's status, at most lingerTimeout. A UDP flow
// that went idle is the exception: Serve returned with its receive loop still waiting, which must
// not be joined by a second reader, and an idle flow has nothing in flight, so the cancel ends it.
func (s *Server) Accept(ctx context.Context, open func(context.Context) (AcceptStream, error), accept *managerv1.Accept) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := open(ctx)
	if err != nil {
		return fmt.Errorf("open accept stream: %w", err)
	}
	first := &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: accept}}
	if err := stream.Send(first); err != nil {
		// Send reports a stream that is gone as io.EOF; Recv has the status.
		if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
		return fmt.Errorf("send accept: %w", err)
	}
	udp, err := s.serve(stream)
	if err != nil {
		return err // the deferred cancel resets the stream
	}
	if err := stream.CloseSend(); err != nil || udp {
		return nil
	}
	t := time.AfterFunc(lingerTimeout, cancel)
	defer t.Stop()
	var m managerv1.TunnelMessage
	for stream.RecvMsg(&m) == nil {
	}
	return nil
}

// serve is Serve, and says whether the stream carried a UDP flow.
func (s *Server) serve(stream ServerStream) (udp bool, err error) {
	s.active.Add(1)
	defer s.active.Add(-1)
	// ctx ends with the stream or with the session, whichever ends first.
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)

	first, err := stream.Recv()
	if err != nil {
		return false, fmt.Errorf("tunnel: receive dial: %w", err)
	}
	d := first.GetDial()
	if d == nil {
		return false, fmt.Errorf("tunnel: first message is %T, not a dial: %w", first.GetMsg(), ErrProtocol)
	}
	o, err := s.open(ctx, cancel, d)
	if err != nil {
		return o.network == "udp", err
	}
	if o.refused != nil {
		return false, s.reject(stream, o.log, o.refused) // no receive loop runs: Accept may linger
	}
	udp, conn, log := o.network == "udp", o.conn, o.log
	defer conn.Close()

	ok := &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}}
	if err := stream.Send(ok); err != nil {
		return udp, fmt.Errorf("tunnel: send dial result: %w", err)
	}

	start := time.Now()
	var st stats
	if udp {
		err = s.copyUDP(stream, conn, &st)
	} else {
		err = copyTCP(stream, conn, &st)
	}
	if ctx.Err() != nil && stream.Context().Err() == nil {
		// The session ended; its cause (e.g. a gRPC status) says so better than a closed socket.
		err = context.Cause(ctx)
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		log.Debug("tunnel ended", "up", st.up.Load(), "down", st.down.Load(),
			"duration", time.Since(start), "error", err)
	}
	return udp, err
}

// opened is a Dial that open served: the dialed connection, or why it was refused.
type opened struct {
	network string // "tcp" or "udp"
	conn    net.Conn
	refused error // a failure to tell the client in a DialResult
	log     *slog.Logger
}

// open vets a Dial's session (tying ctx to the session's life through cancel) and dials its
// destination. An error ends the tunnel without a DialResult. Once ctx ends (the session, the
// tunnel) the dialed connection is closed, which unblocks whatever copies from it.
func (s *Server) open(ctx context.Context, cancel context.CancelCauseFunc, d *managerv1.Dial) (opened, error) {
	if s.cfg.Authorize != nil {
		life, err := s.cfg.Authorize(ctx, d.GetSessionId())
		if err != nil {
			return opened{}, err
		}
		if life != nil {
			stop := context.AfterFunc(life, func() { cancel(context.Cause(life)) })
			// The tunnel's own end releases the watch.
			context.AfterFunc(ctx, func() { stop() })
		}
	}
	o := opened{log: s.log.With("session", d.GetSessionId(), "protocol", d.GetProtocol().String(), "dst", d.GetAddress())}
	network, addr, err := s.target(d)
	if err != nil {
		o.refused = err
		return o, nil
	}
	o.network = network
	timeout := s.cfg.DialTimeout
	if d.GetTimeoutMs() > 0 {
		timeout = time.Duration(d.GetTimeoutMs()) * time.Millisecond
	}
	dctx, dcancel := context.WithTimeout(ctx, timeout)
	conn, err := s.dial(dctx, network, addr)
	dcancel()
	switch {
	case err != nil && ctx.Err() != nil:
		return o, context.Cause(ctx) // the session or the tunnel ended while dialing
	case err != nil:
		o.refused = err
		return o, nil
	}
	context.AfterFunc(ctx, func() { conn.Close() })
	o.conn = conn
	return o, nil
}

func (s *Server) target(d *managerv1.Dial) (string, string, error) {
	if s.cfg.Target != nil {
		network, addr, err := s.cfg.Target(d)
		if err != nil {
			return "", "", fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		return network, addr, nil
	}
	network, ap, err := target(d)
	return network, ap.String(), err
}

// target validates a Dial: only IP addresses are dialed, so a client cannot make the manager resolve
// names (DNS goes through LookupDNS).
func target(d *managerv1.Dial) (string, netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(d.GetAddress())
	if err != nil {
		return "", ap, fmt.Errorf("address %q: %w", d.GetAddress(), ErrBadRequest)
	}
	network := NetworkOf(d.GetProtocol())
	if network == "" {
		return "", ap, fmt.Errorf("protocol %v: %w", d.GetProtocol(), ErrBadRequest)
	}
	return network, ap, nil
}

// reject answers a Dial that failed. The stream then ends without an error status: the failure is
// the destination's, not the tunnel's.
func (s *Server) reject(stream ServerStream, log *slog.Logger, cause error) error {
	reason := reasonOf(cause)
	log.Debug("tunnel dial failed", "reason", reason.String(), "error", cause)
	if err := Refuse(stream, reason, cause.Error()); err != nil {
		return fmt.Errorf("tunnel: %w", err)
	}
	return nil
}

// Refuse answers a Dial with a failed DialResult, the way every party that cannot serve one
// (this Server, the manager, its broker) says so: the stream then ends without an error status.
func Refuse(stream interface{ SendMsg(any) error }, reason managerv1.DialError, msg string) error {
	res := &managerv1.DialResult{Error: msg, Reason: reason}
	if err := stream.SendMsg(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: res}}); err != nil {
		return fmt.Errorf("send dial result: %w", err)
	}
	return nil
}

// stats counts payload bytes: up is client to destination, down is destination to client.
type stats struct{ up, down atomic.Int64 }

// bufPool holds the read buffers of the destination-to-client direction, so that short connections
// do not each allocate one.
var bufPool = sync.Pool{New: func() any { b := make([]byte, max(ChunkSize, MaxDatagram)); return &b }}

// closeWriter is a connection with TCP half-close.
type closeWriter interface{ CloseWrite() error }

// copyTCP copies both ways with half-close until both directions are done or one fails.
// The client-to-destination loop runs in its own goroutine; it blocks in Recv, which only returns
// once the stream ends, so on a destination-side error Serve returns without waiting for it and the
// stream's cancellation (which gRPC does when Serve returns) ends it.
func copyTCP(stream ServerStream, conn net.Conn, st *stats) error {
	upc := make(chan error, 1)
	go func() {
		err := clientToTCP(stream, conn, st)
		upc <- err
		if err != nil {
			// Unblock the destination's Read so that the other direction ends too. This comes after
			// the send, so that tcpToClient, failing because of it, finds the cause in upc.
			conn.Close()
		}
	}()

	if err := tcpToClient(stream, conn, st); err != nil {
		// A client-side failure closes conn, which fails tcpToClient; report the cause.
		select {
		case uerr := <-upc:
			if uerr != nil {
				return uerr
			}
		default:
		}
		return err
	}
	return <-upc
}

func clientToTCP(stream ServerStream, conn net.Conn, st *stats) error {
	var m managerv1.TunnelMessage
	for {
		err := stream.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			// CloseSend without close_write: the client is done writing all the same.
			return shutdownWrite(conn)
		}
		if err != nil {
			return fmt.Errorf("client -> destination: %w", err)
		}
		d := m.GetData()
		if d == nil {
			return fmt.Errorf("client -> destination: unexpected %T: %w", m.GetMsg(), ErrProtocol)
		}
		if p := d.GetPayload(); len(p) > 0 {
			if _, err := conn.Write(p); err != nil {
				return fmt.Errorf("client -> destination: %w", err)
			}
			st.up.Add(int64(len(p)))
		}
		if d.GetCloseWrite() {
			return shutdownWrite(conn)
		}
	}
}

func shutdownWrite(conn net.Conn) error {
	if cw, ok := conn.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil {
			return fmt.Errorf("client -> destination: close write: %w", err)
		}
	}
	return nil
}

func tcpToClient(stream ServerStream, conn net.Conn, st *stats) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := (*bp)[:ChunkSize]

	var data managerv1.Data
	msg := managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{Data: &data}}
	for {
		n, rerr := conn.Read(buf)
		if n > 0 {
			data.Payload = buf[:n]
			if err := stream.SendMsg(&msg); err != nil {
				return fmt.Errorf("destination -> client: %w", err)
			}
			st.down.Add(int64(n))
		}
		if errors.Is(rerr, io.EOF) {
			data.Payload, data.CloseWrite = nil, true
			if err := stream.SendMsg(&msg); err != nil {
				return fmt.Errorf("destination -> client: close write: %w", err)
			}
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("destination -> client: %w", rerr)
		}
	}
}

// copyUDP relays datagrams until the flow is idle, the client ends it, or either side fails.
func (s *Server) copyUDP(stream ServerStream, conn net.Conn, st *stats) error {
	var last atomic.Int64 // nanoseconds since start of the last datagram either way
	start := time.Now()
	touch := func() { last.Store(int64(time.Since(start))) }

	upc := make(chan error, 1)
	go func() {
		err := clientToUDP(stream, conn, st, touch)
		upc <- err
		// Whether the client ended the flow or failed, the destination loop must stop; it finds
		// the result in upc, sent before.
		conn.Close()
	}()

	err := s.udpToClient(stream, conn, st, touch, func() time.Duration {
		return time.Since(start) - time.Duration(last.Load())
	})
	select {
	case uerr := <-upc:
		// The client's side ended first (and closed conn): its result is the flow's.
		return uerr
	default:
	}
	if err != nil {
		return err
	}
	// Idle. The receive loop still waits on the stream, and a caller may read the stream after a
	// nil return (to drain the status), which must not race with it: tell the client the flow is
	// over and wait for it to end its side. A client that does not is cut off by the caller, which
	// cancels the stream on an error.
	end := &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{Data: &managerv1.Data{CloseWrite: true}}}
	if err := stream.SendMsg(end); err != nil {
		return fmt.Errorf("destination -> client: close write: %w", err)
	}
	t := time.NewTimer(idleEndTimeout)
	defer t.Stop()
	select {
	case <-upc:
		return nil // whatever ended the client's side, the flow was over
	case <-t.C:
		return ErrIdleUnanswered
	}
}

// idleEndTimeout is how long an idle UDP flow waits for the client to end its side.
const idleEndTimeout = 5 * time.Second

// ErrIdleUnanswered ends a UDP flow whose client did not end its side after the server ended the
// idle flow; the caller must end the stream.
var ErrIdleUnanswered = errors.New("tunnel: client did not end its side of the idle UDP flow")

func clientToUDP(stream ServerStream, conn net.Conn, st *stats, touch func()) error {
	var m managerv1.TunnelMessage
	for {
		err := stream.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("client -> destination: %w", err)
		}
		d := m.GetData()
		if d == nil {
			return fmt.Errorf("client -> destination: unexpected %T: %w", m.GetMsg(), ErrProtocol)
		}
		if d.GetCloseWrite() {
			return nil
		}
		touch()
		if _, err := conn.Write(d.GetPayload()); err != nil {
			if isRefused(err) {
				continue // ICMP port unreachable from an earlier datagram; UDP carries on
			}
			return fmt.Errorf("client -> destination: %w", err)
		}
		st.up.Add(int64(len(d.GetPayload())))
	}
}

// udpToClient sends each datagram from the destination as one Data message. It wakes up every
// idle timeout to check whether the flow has been idle in both directions for that long.
func (s *Server) udpToClient(stream ServerStream, conn net.Conn, st *stats, touch func(), idleFor func() time.Duration) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp

	idle := s.cfg.UDPIdleTimeout
	var data managerv1.Data
	msg := managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{Data: &data}}
	for {
		if err := conn.SetReadDeadline(time.Now().Add(idle - idleFor())); err != nil {
			return fmt.Errorf("destination -> client: %w", err)
		}
		n, err := conn.Read(buf)
		switch {
		case err == nil:
		case errors.Is(err, net.ErrClosed):
			return nil // clientToUDP ended the flow
		case errors.Is(err, os.ErrDeadlineExceeded):
			if idleFor() >= idle {
				return nil
			}
			continue
		case isRefused(err):
			continue
		default:
			return fmt.Errorf("destination -> client: %w", err)
		}
		touch()
		data.Payload = buf[:n]
		if err := stream.SendMsg(&msg); err != nil {
			return fmt.Errorf("destination -> client: %w", err)
		}
		st.down.Add(int64(n))
	}
}
