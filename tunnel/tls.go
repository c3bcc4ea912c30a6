package tunnel

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// TLS is credentials.NewTLS(cfg) for connections that carry tunnels, with one difference: each
// Write of the connection reaches the socket in one syscall. crypto/tls writes every record (at
// most 16 KiB) with its own write, so gRPC's 64 KiB flushes cost four syscalls each, which make
// bench's profiles showed as the largest single cost of the direct transport on both ends.
func TLS(cfg *tls.Config) credentials.TransportCredentials {
	return coalescing{credentials.NewTLS(cfg)}
}

type coalescing struct {
	credentials.TransportCredentials
}

func (c coalescing) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	b := &heldWrites{Conn: raw}
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, b)
	if err != nil {
		return nil, nil, err
	}
	return &coalescedConn{Conn: conn, held: b}, info, nil
}

func (c coalescing) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	b := &heldWrites{Conn: raw}
	conn, info, err := c.TransportCredentials.ServerHandshake(b)
	if err != nil {
		return nil, nil, err
	}
	return &coalescedConn{Conn: conn, held: b}, info, nil
}

func (c coalescing) Clone() credentials.TransportCredentials {
	return coalescing{c.TransportCredentials.Clone()}
}

// coalescedConn is the TLS connection; its Writes gather their records in held and then write
// them at once.
type coalescedConn struct {
	net.Conn // the *tls.Conn
	held     *heldWrites
}

func (c *coalescedConn) Write(p []byte) (int, error) { return c.held.writeThrough(c.Conn, p) }

// heldWrites is the socket under TLS. While held, writes are gathered in buf; release writes
// them in one go. TLS may also write from its read side (a key update's answer): that write is
// gathered too when it comes during a hold, and goes straight out otherwise, in order either way.
type heldWrites struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
}

// writeThrough writes p to tlsConn, the TLS connection over h, with its records gathered.
func (h *heldWrites) writeThrough(tlsConn io.Writer, p []byte) (int, error) {
	h.hold()
	n, err := tlsConn.Write(p)
	if ferr := h.release(); err == nil {
		err = ferr
	}
	return n, err
}

func (h *heldWrites) hold() {
	h.mu.Lock()
	h.held = true
	h.mu.Unlock()
}

func (h *heldWrites) release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = false
	if len(h.buf) == 0 {
		return nil
	}
	_, err := h.Conn.Write(h.buf)
	// Keep the array for the next Write unless one unusually large Write grew it.
	if cap(h.buf) > 1<<20 {
		h.buf = nil
	} else {
		h.buf = h.buf[:0]
	}
	return err
}

func (h *heldWrites) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}
