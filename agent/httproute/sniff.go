package httproute

import (
	"bytes"
	"context"
	"io"
	"time"
)

// protocol is what a connection's first bytes say it speaks.
type protocol int

const (
	protoOther protocol = iota // not HTTP, or silent: the app gets it whole
	protoHTTP1
	protoH2C    // HTTP/2 with prior knowledge (h2c, gRPC)
	protoSilent // nothing yet: a server-speaks-first protocol, or a client's connection opened ahead
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// readResult is the outcome of one Read on the client connection.
type readResult struct {
	data []byte
	err  error
}

// replayConn is the client connection with the bytes that sniffing already read put back in
// front. Conn has no read deadlines, so sniffing reads in a goroutine; when the sniff times out,
// that read may still be in flight, and its result is the next thing replayConn returns.
type replayConn struct {
	Conn
	buf     []byte
	pending chan readResult // nil when no read is in flight
	err     error           // from the sniffing reads, returned once buf is empty
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) == 0 && c.pending != nil {
		r := <-c.pending
		c.pending = nil
		c.buf, c.err = r.data, r.err
	}
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// startRead reads from c in a goroutine, which ends when the read does (at the latest when c is
// closed).
func startRead(c io.Reader) chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		b := make([]byte, 4096)
		n, err := c.Read(b)
		ch <- readResult{b[:n], err}
	}()
	return ch
}

// sniff reads the first bytes of in until they tell the protocol, they end, or timeout passes
// (protoSilent). The returned conn replays what was read.
func sniff(ctx context.Context, in Conn, timeout time.Duration) (protocol, *replayConn) {
	rc := &replayConn{Conn: in}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	return rc.sniff(ctx, timer.C), rc
}

// sniff reads until the bytes read so far tell the protocol, the client's stream ends, or timeout
// fires (protoSilent; nil: never). A read still in flight is left pending for Read.
func (rc *replayConn) sniff(ctx context.Context, timeout <-chan time.Time) protocol {
	for {
		if len(rc.buf) > 0 {
			if p, decided := classifyPrefix(rc.buf); decided {
				return p
			}
		}
		if rc.err != nil {
			return protoOther
		}
		if rc.pending == nil {
			rc.pending = startRead(rc.Conn)
		}
		select {
		case r := <-rc.pending:
			rc.pending = nil
			rc.buf = append(rc.buf, r.data...)
			rc.err = r.err
		case <-timeout:
			return protoSilent
		case <-ctx.Done():
			return protoOther
		}
	}
}

// classifyPrefix tells the protocol from the first bytes b, or reports that more are needed.
func classifyPrefix(b []byte) (p protocol, decided bool) {
	if len(b) <= len(h2Preface) && bytes.HasPrefix([]byte(h2Preface), b) {
		return protoH2C, len(b) == len(h2Preface)
	}
	if bytes.HasPrefix(b, []byte(h2Preface)) {
		return protoH2C, true
	}
	complete, possible := requestLinePrefix(b)
	switch {
	case complete:
		return protoHTTP1, true
	case !possible || len(b) > maxHeadBytes:
		return protoOther, true
	}
	return protoOther, false
}

// requestLinePrefix reports whether b starts with a whole HTTP/1.x request line (complete), or
// could still become one (possible).
func requestLinePrefix(b []byte) (complete, possible bool) {
	i := 0
	for i < len(b) && isTokenChar(b[i]) {
		i++
	}
	if i == len(b) {
		return false, true
	}
	if i == 0 || b[i] != ' ' {
		return false, false
	}
	i++
	start := i
	for i < len(b) && b[i] > ' ' && b[i] != 0x7f {
		i++
	}
	if i == len(b) {
		return false, true
	}
	if i == start || b[i] != ' ' {
		return false, false
	}
	rest := b[i+1:]
	for _, want := range []string{"HTTP/1.0\r\n", "HTTP/1.1\r\n", "HTTP/1.0\n", "HTTP/1.1\n"} {
		n := min(len(rest), len(want))
		if string(rest[:n]) == want[:n] {
			return n == len(want), true
		}
	}
	return false, false
}
