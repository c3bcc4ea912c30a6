// Package flow is the one home of the data path's byte-stream primitives: joining two ends of a
// TCP-like flow with half-close, and resetting an end that failed. The daemon's netstack, its
// --to-pod listeners and the traffic-agent's forwarder all move bytes through Join.
package flow

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// End is one side of a flow: a byte stream whose write half can be closed on its own.
// *net.TCPConn, gVisor's *gonet.TCPConn and *tunnel.Conn are Ends.
type End interface {
	io.ReadWriter
	CloseWrite() error
}

// bufSize is one read in each direction: a whole tunnel chunk and then some, so that a flow moves
// several TCP segments per syscall and fills a tunnel message per read.
const bufSize = 128 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// GetBuffer lends a copy buffer of 128 KiB, larger than any datagram; PutBuffer takes it back.
func GetBuffer() *[]byte { return bufs.Get().(*[]byte) }

// PutBuffer returns a buffer from GetBuffer.
func PutBuffer(b *[]byte) { bufs.Put(b) }

// Side names an End for the errors Join returns: "client -> tunnel" is a failure copying from
// the End named "client" to the one named "tunnel".
type Side struct {
	Name string
	End  End
}

// Join copies a to b and b to a until both directions are done, and returns then.
//
// A flow ends in one of two ways:
//   - both sides reach EOF: each EOF is passed on as CloseWrite to the other side, and Join
//     returns nil;
//   - a read or write fails (a reset, a broken tunnel, an End closed by its owner): abort is
//     called once, and must make every Read and Write on both Ends return (close them, with a
//     reset where the End has one, see Reset); Join returns the errors tagged with their
//     direction.
//
// Join does not close the Ends after a clean end; the caller does.
func Join(a, b Side, abort func()) error {
	var once sync.Once
	stop := func() { once.Do(abort) }
	up := make(chan error, 1)
	go func() { up <- copyHalf(b, a, stop) }()
	down := copyHalf(a, b, stop)
	return errors.Join(<-up, down)
}

// copyHalf copies from src to dst until src ends, then half-closes dst. On an error it aborts
// the flow.
func copyHalf(dst, src Side, abort func()) error {
	err := Copy(dst.End, src.End)
	if err == nil {
		if err = dst.End.CloseWrite(); err != nil {
			err = fmt.Errorf("close write: %w", err)
		}
	}
	if err != nil {
		abort()
		return fmt.Errorf("%s -> %s: %w", src.Name, dst.Name, err)
	}
	return nil
}

// Copy copies src to dst until src reports EOF. Between two kernel TCP sockets it is io.Copy
// (splice on Linux); otherwise it reads into a pooled bufSize buffer, since the io.ReaderFrom and
// io.WriterTo shortcuts of other types would bypass the buffer and its size. Once a read fills the
// buffer the direction carries bulk data, and it goes on in two goroutines (see pipeline).
func Copy(dst io.Writer, src io.Reader) error {
	if _, ok := dst.(*net.TCPConn); ok {
		if _, ok := src.(*net.TCPConn); ok {
			_, err := io.Copy(dst, src)
			return err
		}
	}
	bp := GetBuffer()
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				PutBuffer(bp)
				return fmt.Errorf("write: %w", err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			PutBuffer(bp)
			return nil
		}
		if rerr != nil {
			PutBuffer(bp)
			return fmt.Errorf("read: %w", rerr)
		}
		if n == len(buf) {
			return pipeline(dst, src, bp)
		}
	}
}

// chunk is one read of pipeline's reader.
type chunk struct {
	buf *[]byte
	n   int
	err error
}

// pipeline is Copy for a bulk direction: one goroutine reads into one buffer while this one
// writes the other, so that what a read costs (a TLS record's decryption, say) and what a write
// costs (the daemon's netstack and TUN) run on two cores instead of taking turns on one. Idle and
// request/response flows never get here and keep one buffer and one goroutine.
//
// After a failed write, the reader stays blocked in src.Read until the flow's abort closes src
// (Join always aborts on an error); its buffers are then left to the garbage collector.
func pipeline(dst io.Writer, src io.Reader, first *[]byte) error {
	free := make(chan *[]byte, 2)
	free <- GetBuffer()
	free <- first
	full := make(chan chunk, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			var b *[]byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			n, err := src.Read(*b)
			select {
			case full <- chunk{buf: b, n: n, err: err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		c := <-full
		if c.n > 0 {
			if _, err := dst.Write((*c.buf)[:c.n]); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
		if c.err != nil {
			// The reader has returned; the other buffer waits in free.
			PutBuffer(c.buf)
			PutBuffer(<-free)
			if errors.Is(c.err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read: %w", c.err)
		}
		free <- c.buf
	}
}

// Reset closes c, with a TCP reset when c is a TCP connection, so that the peer learns the flow
// failed instead of taking it for a complete answer.
func Reset(c io.Closer) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}
