package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/flow"
)

// Raw tunnels carry one TCP flow per TLS connection on the manager's direct port, chosen by ALPN
// (gRPC is "h2" on the same port). The client sends a hello (its session's token and a Dial), the
// server answers with a DialResult, and from then on the connection carries the flow's bytes as
// they are: TLS records rather than a protobuf message per chunk in HTTP/2 frames, and the
// kernel's TCP flow control rather than HTTP/2 windows, which is what makes the direct transport
// lean. A write half ends with TLS close_notify (CloseWrite); a failed flow ends with a TCP reset.
// Hello and result are length-prefixed parts: a 4-byte big-endian length, then the bytes.
const RawALPN = "teledock-raw/1"

// maxPart bounds each part of a hello or result: a token, a Dial, a DialResult are far smaller.
const maxPart = 16 << 10

// WriteRawHello sends a raw tunnel's hello in one write.
func WriteRawHello(w io.Writer, token string, d *managerv1.Dial) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("raw hello: %w", err)
	}
	return writeParts(w, []byte(token), b)
}

// ReadRawHello reads a raw tunnel's hello.
func ReadRawHello(r io.Reader) (token string, d *managerv1.Dial, err error) {
	t, err := readPart(r)
	if err != nil {
		return "", nil, fmt.Errorf("raw hello: token: %w", err)
	}
	b, err := readPart(r)
	if err != nil {
		return "", nil, fmt.Errorf("raw hello: dial: %w", err)
	}
	d = new(managerv1.Dial)
	if err := proto.Unmarshal(b, d); err != nil {
		return "", nil, fmt.Errorf("raw hello: dial: %w: %w", err, ErrProtocol)
	}
	return string(t), d, nil
}

func writeResult(w io.Writer, res *managerv1.DialResult) error {
	b, err := proto.Marshal(res)
	if err != nil {
		return fmt.Errorf("raw dial result: %w", err)
	}
	return writeParts(w, b)
}

func readResult(r io.Reader) (*managerv1.DialResult, error) {
	b, err := readPart(r)
	if err != nil {
		return nil, fmt.Errorf("raw dial result: %w", err)
	}
	res := new(managerv1.DialResult)
	if err := proto.Unmarshal(b, res); err != nil {
		return nil, fmt.Errorf("raw dial result: %w: %w", err, ErrProtocol)
	}
	return res, nil
}

func writeParts(w io.Writer, parts ...[]byte) error {
	var buf []byte
	for _, p := range parts {
		if len(p) > maxPart {
			return fmt.Errorf("part of %d bytes, at most %d: %w", len(p), maxPart, ErrBadRequest)
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(p)))
		buf = append(buf, p...)
	}
	_, err := w.Write(buf)
	return err
}

func readPart(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxPart {
		return nil, fmt.Errorf("part of %d bytes, at most %d: %w", size, maxPart, ErrProtocol)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// RawConn is one raw tunnel's TLS connection. It is a flow.End: Read returns io.EOF after the
// peer's CloseWrite. Close resets the TCP connection unless both halves ended cleanly, so that a
// flow cut short never looks complete to the other side (crypto/tls takes a bare EOF at a record
// boundary for a clean end).
type RawConn struct {
	*TLSConn
	readEOF   atomic.Bool
	writeDone atomic.Bool
	// deadline: the owner set a read deadline, which Read's gathering must not clear.
	deadline atomic.Bool
}

// SetDeadline is net.Conn's; see SetReadDeadline.
func (c *RawConn) SetDeadline(t time.Time) error {
	c.deadline.Store(!t.IsZero())
	return c.TLSConn.SetDeadline(t)
}

// SetReadDeadline is net.Conn's. While a read deadline is set, Read returns one record at a time.
func (c *RawConn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(!t.IsZero())
	return c.TLSConn.SetReadDeadline(t)
}

// NewRawConn wraps a connection whose handshake negotiated RawALPN.
func NewRawConn(c *TLSConn) *RawConn { return &RawConn{TLSConn: c} }

// Read returns what the next TLS record holds and then whatever further records have already
// arrived, as far as p goes: crypto/tls returns one record (at most 16 KiB) per Read, and a flow's
// reader (the daemon's netstack) pays per call, one TUN packet per write, so a 128 KiB buffer is
// filled rather than one eighth of it.
func (c *RawConn) Read(p []byte) (int, error) {
	n, err := c.TLSConn.Read(p)
	if err == nil && n > 0 && len(p)-n >= rawGather && !c.deadline.Load() {
		// A deadline in the past makes the reads below take only what is already buffered (in
		// crypto/tls or in the socket's poller state) and fail at once, without a syscall, where
		// they would wait; a deadline error leaves crypto/tls's state as it was.
		_ = c.raw.SetReadDeadline(time.Unix(1, 0))
		for len(p)-n >= rawGather {
			m, rerr := c.TLSConn.Read(p[n:])
			n += m
			if rerr != nil {
				if errors.Is(rerr, io.EOF) {
					c.readEOF.Store(true)
				}
				if !errors.Is(rerr, os.ErrDeadlineExceeded) {
					err = rerr
				}
				break
			}
		}
		_ = c.raw.SetReadDeadline(time.Time{})
	}
	if errors.Is(err, io.EOF) {
		c.readEOF.Store(true)
	}
	return n, err
}

// rawGather: Read gathers further records while p has room for a whole one.
const rawGather = 16 << 10

// CloseWrite sends close_notify: the peer reads EOF and may go on writing.
func (c *RawConn) CloseWrite() error {
	c.writeDone.Store(true)
	return c.TLSConn.CloseWrite()
}

// Close ends the connection: with a FIN after a clean end both ways, with a reset otherwise.
func (c *RawConn) Close() error {
	if !c.readEOF.Load() || !c.writeDone.Load() {
		flow.Reset(c.raw)
		return nil
	}
	return c.raw.Close()
}

// RawEnd is either end of a raw tunnel: a *RawConn on the direct port, a *FramedConn over a
// port-forward stream.
type RawEnd interface {
	flow.End
	io.Closer
	SetDeadline(t time.Time) error
}

var (
	_ RawEnd = (*RawConn)(nil)
	_ RawEnd = (*FramedConn)(nil)
)

// DialRaw starts a raw tunnel to dst on conn for the session that token belongs to: it sends the
// hello and waits for the server's DialResult. ctx bounds the dial only. A refused or unreachable
// destination comes back as a *DialError, as from Dial; any other error means the raw tunnel
// could not be used (the caller may fall back to a Tunnel stream) and conn is closed.
func DialRaw(ctx context.Context, conn RawEnd, token, sessionID string, dst netip.AddrPort) error {
	if !dst.IsValid() {
		conn.Close()
		return fmt.Errorf("tunnel dial: invalid destination %v: %w", dst, ErrBadRequest)
	}
	d := &managerv1.Dial{SessionId: sessionID, Protocol: managerv1.Protocol_PROTOCOL_TCP, Address: dst.String()}
	if deadline, ok := ctx.Deadline(); ok {
		d.TimeoutMs = int32(max(time.Until(deadline).Milliseconds(), 1))
		_ = conn.SetDeadline(deadline)
	}
	// Cancelling ctx unblocks the exchange below.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	res, err := func() (*managerv1.DialResult, error) {
		if err := WriteRawHello(conn, token, d); err != nil {
			return nil, err
		}
		return readResult(conn)
	}()
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return fmt.Errorf("tunnel dial %s: %w", dst, context.Cause(ctx))
	}
	if err == nil {
		err = resultError(ctx, res, dst)
	} else {
		err = fmt.Errorf("tunnel dial %s: %w", dst, err)
	}
	if err != nil {
		conn.Close()
		return err
	}
	return conn.SetDeadline(time.Time{})
}

// ServeRaw serves one raw tunnel whose hello the caller has read and vetted: it dials d's TCP
// destination, answers, and joins the two until the flow ends (see Server for the ways it ends).
// conn is closed when ServeRaw returns.
func (s *Server) ServeRaw(ctx context.Context, conn RawEnd, d *managerv1.Dial) error {
	s.active.Add(1)
	defer s.active.Add(-1)
	defer conn.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if d.GetProtocol() != managerv1.Protocol_PROTOCOL_TCP {
		return writeResult(conn, &managerv1.DialResult{Reason: managerv1.DialError_DIAL_ERROR_BAD_REQUEST,
			Error: "raw tunnels carry TCP only"})
	}
	o, err := s.open(ctx, cancel, d)
	if err != nil {
		return err
	}
	if o.refused != nil {
		o.log.Debug("raw tunnel dial failed", "error", o.refused)
		return writeResult(conn, &managerv1.DialResult{Reason: reasonOf(o.refused), Error: o.refused.Error()})
	}
	dst, log := o.conn, o.log
	defer dst.Close()
	end, ok := dst.(flow.End)
	if !ok {
		return fmt.Errorf("tunnel: raw tunnel to a %T, which has no half-close: %w", dst, ErrProtocol)
	}
	// Ending ctx (the session, the server) resets both ends, which ends the copies.
	abort := func() {
		flow.Reset(dst)
		_ = conn.Close()
	}
	defer context.AfterFunc(ctx, abort)()
	if err := writeResult(conn, &managerv1.DialResult{Ok: true}); err != nil {
		return fmt.Errorf("tunnel: send dial result: %w", err)
	}
	start := time.Now()
	err = flow.Join(flow.Side{Name: "client", End: conn}, flow.Side{Name: "destination", End: end}, abort)
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	log.Debug("raw tunnel ended", "duration", time.Since(start), "error", err)
	return err
}

// resultError is nil for a successful DialResult and the dial's error otherwise.
func resultError(ctx context.Context, res *managerv1.DialResult, dst netip.AddrPort) error {
	switch {
	case res == nil:
		return fmt.Errorf("tunnel dial %s: first message is not a dial result: %w", dst, ErrProtocol)
	case !res.GetOk():
		derr := &DialError{Reason: res.GetReason(), Message: res.GetError(), Addr: dst}
		// The server ran out of the time our deadline gave it just before ctx itself ended: report
		// it as ctx's deadline, as a local dial would.
		if derr.Reason == managerv1.DialError_DIAL_ERROR_TIMEOUT && hasDeadline(ctx) {
			return fmt.Errorf("%w: %w", derr, context.DeadlineExceeded)
		}
		return derr
	}
	return nil
}

// ClientTLS completes a client handshake on raw; the connection's writes are coalesced (see TLS).
func ClientTLS(ctx context.Context, raw net.Conn, cfg *tls.Config) (*TLSConn, error) {
	return handshake(ctx, raw, func(c net.Conn) *tls.Conn { return tls.Client(c, cfg) })
}

// ServerTLS completes a server handshake on raw; the connection's writes are coalesced.
func ServerTLS(ctx context.Context, raw net.Conn, cfg *tls.Config) (*TLSConn, error) {
	return handshake(ctx, raw, func(c net.Conn) *tls.Conn { return tls.Server(c, cfg) })
}

func handshake(ctx context.Context, raw net.Conn, side func(net.Conn) *tls.Conn) (*TLSConn, error) {
	held := &heldWrites{Conn: raw}
	c := side(held)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return &TLSConn{Conn: c, raw: raw, held: held}, nil
}

// TLSConn is a TLS connection whose Writes reach the socket in one syscall each (see TLS).
type TLSConn struct {
	*tls.Conn
	raw  net.Conn
	held *heldWrites
}

func (c *TLSConn) Write(p []byte) (int, error) { return c.held.writeThrough(c.Conn, p) }
