package forward

import (
	"errors"
	"net"
	"time"

	"teledock.dev/teledock/internal/flow"
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
			if !flow.Sleep(f.ctx, delay) {
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

// handleTCP dials the destination of one accepted connection and joins the two, or hands the
// connection to the destination's Serve. When the dial fails the client's connection is reset,
// as a refused connection would be, rather than closed as if the app had answered with nothing.
func (f *Forwarder) handleTCP(client *net.TCPConn, t Target) {
	defer f.wg.Done()
	defer f.untrack(client)
	fl := Flow{Target: t, Source: addrPort(client.RemoteAddr())}
	dst := f.cfg.Router(fl)
	log := f.log.With("target", t.Name, "src", fl.Source, "dst", dst.Name)
	if dst.Serve != nil {
		f.joined.Add(1)
		defer f.joined.Add(-1)
		err := dst.Serve(f.ctx, client)
		log.Debug("connection done", "err", err)
		return
	}
	up, err := f.dialDestination(dst, fl)
	if err != nil {
		log.Warn("connection refused", "err", err)
		flow.Reset(client)
		return
	}
	if !f.track(up) {
		up.Close()
		flow.Reset(client)
		return
	}
	defer f.untrack(up)
	f.joined.Add(1)
	defer f.joined.Add(-1)
	err = join(client, up)
	log.Debug("connection done", "err", err)
}

// join copies both ways and returns when both are done (flow.Join): both sides' EOFs are passed
// on as half-closes; a failure either way resets both ends, and the Forwarder closing shows up as
// one.
func join(client, upstream Conn) error {
	return flow.Join(flow.Side{Name: "client", End: client}, flow.Side{Name: "upstream", End: upstream}, func() {
		flow.Reset(client)
		flow.Reset(upstream)
	})
}
