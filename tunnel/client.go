package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

const (
	// ChunkSize is the largest payload of one TCP Data message. 32, 64 and 128 KiB measured within
	// noise of each other (see options.go); 64 KiB halves the per-message overhead of 32 KiB while
	// the server's per-connection read buffer stays the size of a UDP datagram.
	ChunkSize = 64 << 10

	// MaxDatagram is the largest UDP payload a tunnel carries (the IPv4 UDP limit).
	MaxDatagram = 65507

	// lingerTimeout bounds how long Close waits for the far end to finish a stream whose both halves
	// are closed, so that data still in flight is delivered instead of reset.
	lingerTimeout = 5 * time.Second
)

// Conn is the client end of one tunnel: a TCP connection or a UDP flow to a cluster destination.
// For TCP it is a byte stream with half-close (CloseWrite); for UDP each Read and Write is one
// datagram. One goroutine may Read while another Writes; Close may be called from any goroutine and
// unblocks both.
type Conn struct {
	stream ClientStream
	cancel context.CancelFunc
	udp    bool
	local  net.Addr
	remote net.Addr

	closeOnce sync.Once
	closed    atomic.Bool // Close was called
	readEOF   atomic.Bool // the far end closed its write half (or the stream ended)
	writeDone atomic.Bool // CloseWrite was called

	rmu        sync.Mutex // rmu guards the following; held by Read (and by Close while lingering)
	rmsg       managerv1.TunnelMessage
	rest       []byte // unread part of the last TCP payload
	rerr       error  // sticky read error; io.EOF after the far end's close_write
	streamDone bool   // RecvMsg returned: the far end's handler has finished

	wmu   sync.Mutex // wmu guards the following; held by Write and CloseWrite
	wdata managerv1.Data
	wmsg  managerv1.TunnelMessage // reused for every send; its Data is wdata
}

// Dial opens a tunnel through the manager to dst and waits for the far end to dial it. network is
// "tcp" or "udp" (optionally with a 4 or 6 suffix). ctx bounds the dial only; the returned Conn
// lives until Close. A refused or unreachable destination comes back as a *DialError that matches
// ErrRefused, ErrUnreachable or ErrTimeout with errors.Is.
func Dial(ctx context.Context, c managerv1.ManagerClient, sessionID, network string, dst netip.AddrPort) (*Conn, error) {
	return DialStream(ctx, func(ctx context.Context) (ClientStream, error) { return c.Tunnel(ctx) },
		&managerv1.Dial{SessionId: sessionID}, network, dst)
}

// ClientStream is the client side of a Tunnel, AgentTunnel or Accept call.
type ClientStream interface {
	Send(*managerv1.TunnelMessage) error
	Recv() (*managerv1.TunnelMessage, error)
	SendMsg(any) error
	RecvMsg(any) error
	CloseSend() error
}

// DialStream is Dial over a stream that open starts: the manager's Tunnel for clients, AgentTunnel
// for agents. dial carries the session and, for paired connections, the intercept; its protocol,
// address and timeout are filled in from network, dst and ctx.
func DialStream(ctx context.Context, open func(context.Context) (ClientStream, error), dial *managerv1.Dial, network string, dst netip.AddrPort) (*Conn, error) {
	proto, err := protocolOf(network)
	if err != nil {
		return nil, err
	}
	if !dst.IsValid() {
		return nil, fmt.Errorf("tunnel dial: invalid destination %v: %w", dst, ErrBadRequest)
	}
	sessionID := dial.GetSessionId()

	// The stream must outlive ctx, which only bounds the dial, so it gets its own cancel and keeps
	// ctx's values (gRPC metadata) but not its deadline.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	fail := func(err error) (*Conn, error) {
		stop()
		cancel()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tunnel dial %s: %w", dst, context.Cause(ctx))
		}
		return nil, err
	}

	stream, err := open(sctx)
	if err != nil {
		return fail(fmt.Errorf("tunnel dial %s: open stream: %w", dst, err))
	}
	dial.Protocol, dial.Address = proto, dst.String()
	if deadline, ok := ctx.Deadline(); ok {
		dial.TimeoutMs = int32(max(time.Until(deadline).Milliseconds(), 1))
	}
	if err := stream.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Dial{Dial: dial}}); err != nil {
		// Send returns io.EOF when the stream is already gone; Recv has the real status.
		if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
		return fail(fmt.Errorf("tunnel dial %s: send dial: %w", dst, err))
	}
	msg, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("stream ended before the dial result: %w", ErrProtocol)
		}
		return fail(fmt.Errorf("tunnel dial %s: %w", dst, err))
	}
	if err := resultError(ctx, msg.GetDialResult(), dst); err != nil {
		return fail(err)
	}
	if !stop() {
		// ctx ended while the result was on its way; the stream is already cancelled.
		return fail(fmt.Errorf("tunnel dial %s: %w", dst, context.Cause(ctx)))
	}

	conn := &Conn{
		stream: stream,
		cancel: cancel,
		udp:    proto == managerv1.Protocol_PROTOCOL_UDP,
		local:  Addr{Net: network, Session: sessionID},
	}
	if conn.udp {
		conn.remote = net.UDPAddrFromAddrPort(dst)
	} else {
		conn.remote = net.TCPAddrFromAddrPort(dst)
	}
	conn.wmsg.Msg = &managerv1.TunnelMessage_Data{Data: &conn.wdata}
	return conn, nil
}

// protocolOf is ProtocolOf, refusing a network the tunnel does not carry.
func protocolOf(network string) (managerv1.Protocol, error) {
	p := ProtocolOf(network)
	if p == managerv1.Protocol_PROTOCOL_UNSPECIFIED {
		return p, fmt.Errorf("tunnel dial: network %q: %w", network, ErrBadRequest)
	}
	return p, nil
}

// Read reads from the far end. For TCP it returns io.EOF after the far end's half-close, and keeps
// the part of a payload that did not fit b for the next Read. For UDP it returns one datagram per
// call; a datagram longer than b is truncated, as with a UDP socket. io.EOF on UDP means the far end
// ended the flow (idle): Close the Conn, which the server waits for.
func (c *Conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.udp {
		return c.readDatagram(b)
	}
	for len(c.rest) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		c.recv()
	}
	n := copy(b, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *Conn) readDatagram(b []byte) (int, error) {
	if c.rerr != nil {
		return 0, c.rerr
	}
	c.recv()
	if c.rest == nil && c.rerr != nil {
		return 0, c.rerr
	}
	n := copy(b, c.rest)
	c.rest = nil
	return n, nil
}

// recv receives one message into c.rest, or records why the read side ended in c.rerr.
// A UDP datagram of length zero leaves c.rest empty but non-nil.
func (c *Conn) recv() {
	err := c.stream.RecvMsg(&c.rmsg)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		// The far end's handler returned without an error: for TCP it has sent close_write before,
		// for UDP this is how an idle flow ends.
		c.streamDone = true
		c.setReadErr(io.EOF)
		return
	case c.closed.Load():
		c.streamDone = true
		c.setReadErr(fmt.Errorf("tunnel read: %w", net.ErrClosed))
		return
	default:
		c.streamDone = true
		c.setReadErr(fmt.Errorf("tunnel read: %w", err))
		return
	}
	d := c.rmsg.GetData()
	if d == nil {
		c.setReadErr(fmt.Errorf("tunnel read: unexpected %T: %w", c.rmsg.GetMsg(), ErrProtocol))
		c.cancel()
		return
	}
	// The codec decodes the next message into this payload's array (no allocation per chunk):
	// Read receives again only once c.rest is used up.
	c.rest = d.GetPayload()
	if c.udp && c.rest == nil && !d.GetCloseWrite() {
		c.rest = []byte{}
	}
	if d.GetCloseWrite() {
		c.setReadErr(io.EOF)
	}
}

func (c *Conn) setReadErr(err error) {
	if c.rerr == nil {
		c.rerr = err
		c.readEOF.Store(true)
	}
}

// Write sends b to the far end. For TCP it is split into ChunkSize messages; for UDP b is one
// datagram of at most MaxDatagram bytes. b may be reused as soon as Write returns: every message is
// marshalled before SendMsg returns.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeDone.Load() {
		return 0, fmt.Errorf("tunnel write after CloseWrite: %w", net.ErrClosed)
	}
	if c.udp {
		if len(b) > MaxDatagram {
			return 0, fmt.Errorf("tunnel write: datagram of %d bytes exceeds %d", len(b), MaxDatagram)
		}
		if err := c.send(b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	n := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), ChunkSize)]
		if err := c.send(chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
	return n, nil
}

func (c *Conn) send(payload []byte) error {
	c.wdata.Payload = payload
	err := c.stream.SendMsg(&c.wmsg)
	c.wdata.Payload = nil // do not pin the caller's buffer
	switch {
	case err == nil:
		return nil
	case c.closed.Load():
		return fmt.Errorf("tunnel write: %w", net.ErrClosed)
	case errors.Is(err, io.EOF):
		// The stream was ended by the far end; its status is reported by Read.
		return fmt.Errorf("tunnel write: %w", io.ErrClosedPipe)
	}
	return fmt.Errorf("tunnel write: %w", err)
}

// CloseWrite half-closes the tunnel: the far end sees EOF (TCP: its dialed connection is shut down
// for writing) and may go on sending. For UDP it ends the flow.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeDone.Load() {
		return nil
	}
	c.writeDone.Store(true)
	c.wdata.CloseWrite = true
	err := c.stream.SendMsg(&c.wmsg)
	c.wdata.CloseWrite = false
	if err != nil {
		if c.closed.Load() {
			return fmt.Errorf("tunnel close write: %w", net.ErrClosed)
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("tunnel close write: %w", io.ErrClosedPipe)
		}
		return fmt.Errorf("tunnel close write: %w", err)
	}
	if err := c.stream.CloseSend(); err != nil {
		return fmt.Errorf("tunnel close write: %w", err)
	}
	return nil
}

// Close ends the tunnel and unblocks any Read or Write. When both halves are already closed it first
// waits (up to lingerTimeout) for the far end to finish, because cancelling the stream at once could
// drop data still in flight toward the destination. Otherwise it resets the stream at once, like a
// TCP RST. Close is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if c.writeDone.Load() && c.readEOF.Load() {
			c.linger()
		}
		c.closed.Store(true)
		c.cancel()
	})
	return nil
}

// linger waits for the stream's status. Read no longer receives once readEOF is set, so taking rmu
// here does not block behind a pending RecvMsg.
func (c *Conn) linger() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.streamDone {
		return
	}
	t := time.AfterFunc(lingerTimeout, c.cancel)
	defer t.Stop()
	var m managerv1.TunnelMessage
	for c.stream.RecvMsg(&m) == nil {
	}
	c.streamDone = true
}

// LocalAddr describes the tunnel's local end, which is a stream in a session rather than a socket.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the cluster destination: a *net.TCPAddr or a *net.UDPAddr.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Addr is the local address of a tunnel.
type Addr struct {
	Net     string
	Session string
}

func (a Addr) Network() string { return a.Net }
func (a Addr) String() string  { return "tunnel:" + a.Session }

var _ interface {
	io.ReadWriteCloser
	CloseWrite() error
} = (*Conn)(nil)

func hasDeadline(ctx context.Context) bool {
	_, ok := ctx.Deadline()
	return ok
}
