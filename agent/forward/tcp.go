package forward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// serveTCP accepts connections until the listener is closed.
func (f *Forwarder) serveTCP(l *net.TCPListener, t Target) {
	defer f.wg.Done()
	var delay time.Duration
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.ctx.Err() != nil {
				return
			}
			// Accept fails for a while when the process is out of file descriptors; back off
			// instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			f.log.Warn("accept", "target", t.Name, "err", err, "retry_in", delay)
			if !f.sleepCtx(delay) {
				return
			}
			continue
		}
		delay = 0
		if !f.track(c) {
			c.Close()
			return
		}
		f.wg.Add(1)
		go f.handleTCP(c, t)
	}
}

// handleTCP dials the destination of one accepted connection and joins the two. When the dial
// fails the client's connection is reset, as a refused connection would be, rather than closed
// as if the app had answered with nothing.
func (f *Forwarder) handleTCP(client *net.TCPConn, t Target) {
	defer f.wg.Done()
	defer f.untrack(client)
	flow := Flow{Target: t, Source: addrPort(client.RemoteAddr())}
	up, dst, err := f.dial(flow)
	log := f.log.With("target", t.Name, "src", flow.Source, "dst", dst.Name)
	if err != nil {
		log.Warn("connection refused", "err", err)
		abort(client)
		return
	}
	if !f.track(up) {
		up.Close()
		abort(client)
		return
	}
	defer f.untrack(up)
	f.joined.Add(1)
	defer f.joined.Add(-1)
	err = join(client, up)
	log.Debug("connection done", "err", err)
}

// join copies both ways, each direction in its own goroutine, and returns when both are done.
// A flow ends in one of three ways:
//   - both sides half-close: each EOF is passed on as a CloseWrite, and join returns nil;
//   - either direction fails (a reset, a broken tunnel): both ends are aborted so that the
//     other direction stops too, and the errors are returned tagged with their direction;
//   - the Forwarder closes: it closes both ends, which shows up as the second case.
func join(client, upstream Conn) error {
	errc := make(chan error, 2)
	go func() { errc <- pipe(upstream, client, "client -> upstream") }()
	go func() { errc <- pipe(client, upstream, "upstream -> client") }()
	first := <-errc
	if first != nil {
		abort(client)
		abort(upstream)
	}
	return errors.Join(first, <-errc)
}

// pipe copies src to dst until src ends, then half-closes dst.
func pipe(dst, src Conn, dir string) error {
	if _, err := io.Copy(dst, src); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if err := dst.CloseWrite(); err != nil {
		return fmt.Errorf("%s: close write: %w", dir, err)
	}
	return nil
}

// abort closes c, with a TCP reset when c is a TCP connection, so that the peer learns the
// stream failed instead of taking it for a complete answer.
func abort(c io.Closer) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	c.Close()
}
