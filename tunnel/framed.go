package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Framed tunnels are raw tunnels (see RawALPN) over a byte stream that cannot end one direction
// on its own or signal a failure: a port-forward stream, which the container runtime ends both
// ways soon after either ends (containerd within 1 s, CRI-O 0.5 s), and whose end looks the same
// whether the far side finished or died. After the hello (sent as it is, by the client), every
// write is a frame: a 4-byte big-endian length, then that many bytes. Length 0 ends the write
// half (CloseWrite); frameAbort says the flow failed, as a TCP reset would. A stream that ends
// without either is a failure too.
const (
	frameClose uint32 = 0
	frameAbort uint32 = 1<<32 - 1
	// maxFrame bounds a data frame: larger writes are split.
	maxFrame = 1 << 20
	// abortWait bounds the abort frame's write: a peer that stopped reading gets a plain reset.
	abortWait = time.Second
)

// ErrAborted is what reading a framed tunnel returns after the far end aborted the flow. It
// matches syscall.ECONNRESET, as a reset TCP connection would.
var ErrAborted = fmt.Errorf("tunnel aborted by the far end: %w", syscall.ECONNRESET)

// FramedConn is a flow's end over a framed tunnel; see frameClose. It is a flow.End. Close ends
// the flow cleanly after both halves ended, and aborts it otherwise.
type FramedConn struct {
	s     io.ReadWriteCloser
	r     *bufio.Reader
	reset func()

	left    uint32 // bytes of the current data frame not yet read; only Read uses it
	readEOF atomic.Bool

	wmu       sync.Mutex // guards the fields below and orders frames
	wbuf      []byte
	writeDone bool

	closeOnce sync.Once
}

// NewFramedConn frames s. reset must make s's reads and writes fail at once, with a TCP reset
// where s has one; Close calls it after an abort. s's own Close must end it cleanly.
func NewFramedConn(s io.ReadWriteCloser, reset func()) *FramedConn {
	return &FramedConn{s: s, r: bufio.NewReaderSize(s, 64<<10), reset: reset}
}

// Read returns the bytes of the current data frame, io.EOF after the peer's CloseWrite, and
// ErrAborted after its abort.
func (c *FramedConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.readEOF.Load() {
		return 0, io.EOF
	}
	for c.left == 0 {
		var h [4]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, fmt.Errorf("framed tunnel ended without a close frame: %w", ErrAborted)
			}
			return 0, err
		}
		switch n := binary.BigEndian.Uint32(h[:]); {
		case n == frameClose:
			c.readEOF.Store(true)
			return 0, io.EOF
		case n == frameAbort:
			return 0, ErrAborted
		case n > maxFrame:
			return 0, fmt.Errorf("frame of %d bytes, at most %d: %w", n, maxFrame, ErrProtocol)
		default:
			c.left = n
		}
	}
	n, err := c.r.Read(p[:min(uint32(len(p)), c.left)])
	c.left -= uint32(n)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("framed tunnel ended inside a frame: %w", ErrAborted)
	}
	return n, err
}

// Write sends p as one frame, or several when it is larger than a frame.
func (c *FramedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeDone {
		return 0, net.ErrClosed
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxFrame)]
		if err := c.frameLocked(uint32(len(chunk)), chunk); err != nil {
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

// frameLocked writes one frame with one write of the stream: a port-forward stream sends each
// write as a frame of its own, so a separate header would double the frames. A socket takes the
// header and payload in one writev instead of a copy.
func (c *FramedConn) frameLocked(n uint32, payload []byte) error {
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], n)
	if tc, ok := c.s.(*net.TCPConn); ok {
		bufs := net.Buffers{h[:], payload}
		_, err := bufs.WriteTo(tc)
		return err
	}
	c.wbuf = append(append(c.wbuf[:0], h[:]...), payload...)
	_, err := c.s.Write(c.wbuf)
	if cap(c.wbuf) > 2*maxFrame {
		c.wbuf = nil
	}
	return err
}

// CloseWrite ends the write half: the peer reads io.EOF and may go on writing.
func (c *FramedConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeDone {
		return nil
	}
	c.writeDone = true
	return c.frameLocked(frameClose, nil)
}

// Close ends the stream: cleanly when both halves ended, and otherwise with an abort frame (sent
// within abortWait) and a reset, so that the far end never takes a cut flow for a complete one.
func (c *FramedConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		clean := c.writeDone
		c.writeDone = true
		c.wmu.Unlock()
		if clean && c.readEOF.Load() {
			err = c.s.Close()
			return
		}
		if !clean {
			// A blocked write (the peer stopped reading) holds wmu; the timer's reset ends it.
			t := time.AfterFunc(abortWait, c.reset)
			c.wmu.Lock()
			_ = c.frameLocked(frameAbort, nil)
			c.wmu.Unlock()
			t.Stop()
		}
		c.reset()
	})
	return err
}

// SetDeadline sets the stream's deadline when it has one; DialRaw uses it to bound the hello.
func (c *FramedConn) SetDeadline(t time.Time) error {
	if d, ok := c.s.(interface{ SetDeadline(time.Time) error }); ok {
		return d.SetDeadline(t)
	}
	return nil
}
