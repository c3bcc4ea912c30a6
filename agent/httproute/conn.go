package httproute

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// join copies aR to bW and bR to aW until both directions end. A direction that ends cleanly
// half-closes its writer, so the other direction can still finish (a client that sends its last
// bytes and waits for the answer); a direction that fails closes both connections, since the
// other could wait forever.
func join(aR io.Reader, aW Conn, bR io.Reader, bW Conn) {
	var wg sync.WaitGroup
	pipe := func(dst Conn, src io.Reader) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			aW.Close()
			bW.Close()
			return
		}
		dst.CloseWrite() //nolint:errcheck // the peer may be gone already
	}
	wg.Add(2)
	go pipe(bW, aR)
	go pipe(aW, bR)
	wg.Wait()
}

// onceConn closes its Conn once, so that the paths that end a connection (the client left, ctx
// ended, an error) need not coordinate.
type onceConn struct {
	Conn
	once sync.Once
	err  error
}

func (c *onceConn) Close() error {
	c.once.Do(func() { c.err = c.Conn.Close() })
	return c.err
}

// netConn makes a Conn a net.Conn for net/http. Deadlines go to the underlying connection when it
// has them and are ignored otherwise: net/http only needs them for timeouts that are not set
// here, and closing the connection still unblocks everything.
type netConn struct {
	Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newNetConn(c Conn) *netConn { return &netConn{Conn: c, closed: make(chan struct{})} }

func (c *netConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.closed) })
	return err
}

type deadliner interface {
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

type addresser interface {
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
}

func (c *netConn) LocalAddr() net.Addr {
	if a, ok := c.underlying().(addresser); ok {
		return a.LocalAddr()
	}
	return pipeAddr{}
}

func (c *netConn) RemoteAddr() net.Addr {
	if a, ok := c.underlying().(addresser); ok {
		return a.RemoteAddr()
	}
	return pipeAddr{}
}

func (c *netConn) SetDeadline(t time.Time) error {
	if d, ok := c.deadliner(); ok {
		return d.SetDeadline(t)
	}
	return nil
}

func (c *netConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.deadliner(); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

func (c *netConn) SetWriteDeadline(t time.Time) error {
	if d, ok := c.deadliner(); ok {
		return d.SetWriteDeadline(t)
	}
	return nil
}

// deadliner finds deadlines to set. The client connection gets none: its first read may still
// be in flight in the sniffing goroutine, and bytes already sniffed have no deadline to obey.
func (c *netConn) deadliner() (deadliner, bool) {
	if _, ok := c.Conn.(*replayConn); ok {
		return nil, false
	}
	d, ok := c.underlying().(deadliner)
	return d, ok
}

// underlying finds the connection below the wrappers of this package.
func (c *netConn) underlying() any {
	conn := c.Conn
	for {
		switch w := conn.(type) {
		case *onceConn:
			conn = w.Conn
		case *replayConn:
			conn = w.Conn
		default:
			return conn
		}
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// isClosed reports errors that only say the connection was closed on purpose.
func isClosed(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}
