package httproute

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

const ioBufferSize = 32 << 10

// upstream is one connection to a destination, kept for the requests of one client connection
// that go there.
type upstream struct {
	conn   Conn
	r      *bufio.Reader
	w      *bufio.Writer
	reused bool // a previous exchange completed on it
	// idle, between exchanges, gets the outcome of a read that waits for the next response
	// bytes: when it is ready before a request is sent, the destination closed the connection
	// (or spoke out of turn), and the request goes on a new connection instead.
	idle chan error
}

// watch starts the idle read of a kept connection.
func (u *upstream) watch() {
	u.idle = make(chan error, 1)
	go func() {
		_, err := u.r.Peek(1)
		u.idle <- err
	}()
}

// stale reports whether the kept connection ended (or sent unasked bytes) while idle.
func (u *upstream) stale() bool {
	if u.idle == nil {
		return false
	}
	select {
	case <-u.idle:
		u.idle = nil
		return true
	default:
		return false
	}
}

// awaitResponse waits for the idle read to see the response start; afterwards u.r is the main
// goroutine's again.
func (u *upstream) awaitResponse() error {
	if u.idle == nil {
		return nil
	}
	err := <-u.idle
	u.idle = nil
	return err
}

// h1conn routes the requests of one HTTP/1.x client connection, one at a time.
type h1conn struct {
	ctx context.Context
	cfg *config
	in  Conn
	cr  *bufio.Reader // client reader
	cw  *bufio.Writer // client writer

	mu     sync.Mutex
	ups    map[string]*upstream // by dest name
	closed bool
}

func serveHTTP1(ctx context.Context, in Conn, rc *replayConn, cfg *config) error {
	c := &h1conn{
		ctx: ctx,
		cfg: cfg,
		in:  in,
		cr:  bufio.NewReaderSize(rc, ioBufferSize),
		cw:  bufio.NewWriterSize(in, ioBufferSize),
		ups: make(map[string]*upstream),
	}
	stop := context.AfterFunc(ctx, c.closeAll)
	defer stop()
	defer c.closeAll()
	for {
		// A client gets headIdleTimeout to send its next request head whole: idle keep-alive
		// connections and heads sent a byte at a time do not hold the agent's memory for ever.
		idle := time.AfterFunc(headIdleTimeout, c.closeAll)
		req, _, err := readHead(c.cr, true)
		idle.Stop()
		switch {
		case errors.Is(err, io.EOF):
			return nil // the client is done
		case errors.Is(err, errHeadTooLarge):
			c.reject(http.StatusRequestHeaderFieldsTooLarge, "request head too large\n")
			return fmt.Errorf("read request: %w", err)
		case errors.Is(err, errMalformed):
			c.reject(http.StatusBadRequest, "malformed request\n")
			return fmt.Errorf("read request: %w", err)
		case err != nil:
			return fmt.Errorf("read request: %w", err)
		case req.status != 0:
			c.reject(http.StatusBadRequest, "malformed request\n")
			return fmt.Errorf("read request: %w: a status line", errMalformed)
		case req.otherCoding || (req.chunked && req.contentLength >= 0):
			// Framing that peers may read differently is how requests get smuggled.
			c.reject(http.StatusBadRequest, "ambiguous request framing\n")
			return fmt.Errorf("read request: %w: Transfer-Encoding %q with Content-Length %d", errMalformed, req.header["Transfer-Encoding"], req.contentLength)
		}
		keep, err := c.exchange(req)
		if err != nil || !keep {
			return err
		}
	}
}

// headIdleTimeout bounds the wait for each request head, from the end of the previous exchange.
const headIdleTimeout = 2 * time.Minute

// closeAll closes the client connection and every upstream; it unblocks whatever waits on them.
func (c *h1conn) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.in.Close()
	for i, u := range c.ups {
		u.conn.Close()
		delete(c.ups, i)
	}
}

// upstream returns the kept connection to d, dialing one if there is none.
func (c *h1conn) upstream(d dest) (*upstream, error) {
	c.mu.Lock()
	u := c.ups[d.name]
	c.mu.Unlock()
	if u != nil && !u.stale() {
		return u, nil
	}
	if u != nil {
		c.cfg.log.Debug("kept connection was closed; redialing", "destination", d.name)
		c.drop(d, u)
	}
	conn, err := dialDest(c.ctx, d)
	if err != nil {
		return nil, err
	}
	u = &upstream{conn: conn, r: bufio.NewReaderSize(conn, ioBufferSize), w: bufio.NewWriterSize(conn, ioBufferSize)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", d.name, context.Cause(c.ctx))
	}
	c.ups[d.name] = u
	return u, nil
}

// drop closes and forgets the upstream to d, which cannot carry another exchange.
func (c *h1conn) drop(d dest, u *upstream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ups[d.name] == u {
		delete(c.ups, d.name)
	}
	u.conn.Close()
}

// reply answers the client with a short text response of its own and says it will close.
func (c *h1conn) reply(code int, text string) {
	c.writeText(code, text, true)
}

// reject answers a request that cannot be read, before the connection closes. Closing a socket
// with unread input resets it, which can destroy the answer before the client reads it, so the
// input is drained for a moment first.
func (c *h1conn) reject(code int, text string) {
	if c.writeText(code, text, true) != nil {
		return
	}
	c.in.CloseWrite() //nolint:errcheck // closing anyway
	timer := time.AfterFunc(time.Second, c.closeAll)
	defer timer.Stop()
	io.CopyN(io.Discard, c.cr, 1<<20) //nolint:errcheck // draining only
}

func (c *h1conn) writeText(code int, text string, closing bool) error {
	conn := ""
	if closing {
		conn = "Connection: close\r\n"
	}
	fmt.Fprintf(c.cw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s",
		code, http.StatusText(code), len(text), conn, text)
	return c.cw.Flush()
}

// exchange forwards one request and relays its response. keep reports whether the client
// connection can carry the next request.
func (c *h1conn) exchange(req *head) (keep bool, err error) {
	d, taps := c.cfg.route(requestPath(req.target), req.header)
	var cp *tapCopy
	if len(taps) > 0 {
		cp = newTapCopy(req, taps)
	}
	for attempt := 0; ; attempt++ {
		u, err := c.upstream(d)
		if err != nil {
			return c.badGateway(req, d, cp, taps, err)
		}
		keep, retry, err := c.forward(req, d, u, cp, taps)
		if retry && attempt == 0 {
			c.cfg.log.Debug("kept connection was closed; redialing", "destination", d.name)
			continue
		}
		return keep, err
	}
}

// badGateway answers 502 when d cannot be dialed. The request body is read (and copied to the
// wiretaps) so that the connection can go on with the next request.
func (c *h1conn) badGateway(req *head, d dest, cp *tapCopy, taps []*Tap, dialErr error) (bool, error) {
	c.cfg.log.Warn("cannot reach the destination of a request", "destination", d.name, "error", dialErr)
	if strings.EqualFold(trimOWS(req.header.Get("Expect")), "100-continue") {
		// The client waits for a 100 before it sends the body: answer now, and end the
		// connection, since the body will not come on it.
		if err := c.writeText(http.StatusBadGateway, badGatewayText(d), true); err != nil {
			return false, fmt.Errorf("write response: %w", err)
		}
		return false, nil
	}
	x := relay{r: c.cr, w: bufio.NewWriterSize(io.Discard, 512), tee: cp.writer()}
	if err := x.requestBody(req); err != nil {
		c.reply(http.StatusBadGateway, badGatewayText(d))
		return false, fmt.Errorf("read request body: %w", err)
	}
	cp.offer(taps)
	keep := req.keepAlive()
	if err := c.writeText(http.StatusBadGateway, badGatewayText(d), !keep); err != nil {
		return false, fmt.Errorf("write response: %w", err)
	}
	return keep, nil
}

// forward does one exchange over u. retry reports that u, a kept connection, turned out closed
// before the response started, and that the request can be sent again on a new connection: it
// has no body and is idempotent (the rule of net/http's Transport), since the destination may
// have acted on it before closing.
func (c *h1conn) forward(req *head, d dest, u *upstream, cp *tapCopy, taps []*Tap) (keep, retry bool, err error) {
	if _, err := u.w.Write(req.raw); err != nil {
		c.drop(d, u)
		retry := u.reused && replayable(req)
		if !retry {
			c.reply(http.StatusBadGateway, badGatewayText(d))
		}
		return false, retry, fmt.Errorf("write request to %s: %w", d.name, err)
	}
	// The body streams in its own goroutine while the response is read, because the response (a
	// 100 Continue, or an early error) may come before the body is all sent.
	bodyDone := make(chan error, 1)
	if req.hasBody() {
		go func() {
			x := relay{r: c.cr, w: u.w, tee: cp.writer()}
			err := x.requestBody(req)
			if err == nil {
				cp.offer(taps)
			}
			bodyDone <- err
		}()
	} else {
		cp.offer(taps)
		bodyDone <- u.w.Flush()
	}
	// Every path out waits for the body goroutine: it reads the client connection, which the
	// next request head needs. fail ends the client connection, which unblocks the goroutine.
	fail := func(text string) {
		if text != "" {
			c.reply(http.StatusBadGateway, text)
		}
		c.closeAll()
		<-bodyDone
	}
	expect100 := strings.EqualFold(req.header.Get("Expect"), "100-continue")
	continued := false
	relayed := false // whether any response bytes reached the client
	for {
		var resp *head
		started := false
		err := u.awaitResponse()
		if err == nil {
			resp, started, err = readHead(u.r, false)
		}
		if err != nil {
			if !started && u.reused && replayable(req) {
				c.drop(d, u)
				<-bodyDone
				return false, true, err
			}
			switch {
			case relayed:
				fail("")
			case errors.Is(err, errHeadTooLarge), errors.Is(err, errMalformed):
				fail("teledock: " + d.name + " sent a malformed response\n")
			default:
				fail(badGatewayText(d))
			}
			return false, false, fmt.Errorf("read response from %s: %w", d.name, err)
		}
		if resp.status == 0 {
			fail("teledock: " + d.name + " sent a malformed response\n")
			return false, false, fmt.Errorf("read response from %s: %w: a request line", d.name, errMalformed)
		}
		relayed = true
		if _, err := c.cw.Write(resp.raw); err != nil {
			fail("")
			return false, false, fmt.Errorf("write response: %w", err)
		}
		switchProtocols := resp.status == http.StatusSwitchingProtocols ||
			(req.method == http.MethodConnect && resp.status >= 200 && resp.status < 300)
		if switchProtocols {
			if err := c.cw.Flush(); err != nil {
				fail("")
				return false, false, fmt.Errorf("write response: %w", err)
			}
			if err := <-bodyDone; err != nil {
				c.closeAll()
				return false, false, fmt.Errorf("forward request body to %s: %w", d.name, err)
			}
			// The connection now speaks another protocol (a websocket, a tunnel): join the two
			// ends for the rest of it, with what either side has buffered.
			join(c.cr, c.in, u.r, u.conn)
			return false, false, nil
		}
		if resp.status < 200 {
			// An interim response (100 Continue, 103 Early Hints): the final one follows.
			continued = continued || resp.status == http.StatusContinue
			if err := c.cw.Flush(); err != nil {
				fail("")
				return false, false, fmt.Errorf("write response: %w", err)
			}
			continue
		}
		end := responseFraming(req.method, resp)
		x := relay{r: u.r, w: c.cw}
		if err := x.responseBody(end, resp); err != nil {
			fail("")
			return false, false, fmt.Errorf("relay response from %s: %w", d.name, err)
		}
		reusable := end != endClose && resp.keepAlive() && !(resp.chunked && resp.contentLength >= 0)
		var bodyErr error
		select {
		case bodyErr = <-bodyDone:
		default:
			if expect100 && !continued {
				// The app answered without asking for the body: the client may never send it,
				// and nothing tells where the next request would start.
				fail("")
				return false, false, nil
			}
			bodyErr = <-bodyDone
		}
		if bodyErr != nil {
			c.closeAll()
			return false, false, fmt.Errorf("forward request body to %s: %w", d.name, bodyErr)
		}
		if !reusable {
			c.drop(d, u)
		} else {
			u.reused = true
			u.watch()
		}
		// A response that ends the upstream connection tells the client the same, verbatim.
		return reusable && req.keepAlive(), false, nil
	}
}

// replayable reports whether req may be sent twice.
func replayable(req *head) bool {
	if req.hasBody() {
		return false
	}
	switch req.method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.header.Get("Idempotency-Key") != "" || req.header.Get("X-Idempotency-Key") != ""
}
