//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// delayProxy is a TCP proxy that adds latency without limiting throughput, to emulate a remote
// API server on this machine, whose kernel has no netem. Each direction is a delay line: a reader
// timestamps every chunk as it arrives and queues it, and a writer forwards each chunk when its
// time comes. Reading never waits for writing, so as much data is in flight as the endpoints'
// windows allow, as on a long link; order is kept because one writer drains one FIFO.
//
// The proxy terminates TCP, so the kernels' TCP windows on either side see no delay; what sees
// it is everything above TCP (TLS, HTTP/2 and SPDY/WebSocket flow control, request round trips),
// which is what limits a port-forward on a long link (design.md: ~20 Mbit/s at 20 ms RTT).
type delayProxy struct {
	ln       net.Listener
	upstream string
	delay    time.Duration // one way

	up, down atomic.Int64 // bytes forwarded client -> upstream and back

	wg     sync.WaitGroup
	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

const (
	// chunkSize is the largest read of a delay line.
	chunkSize = 64 << 10
	// lineChunks bounds a delay line's queue, and so its memory (lineChunks*chunkSize, 64 MiB):
	// far above a bandwidth-delay product of 1 GB/s * 10 ms, so the bound never limits throughput.
	lineChunks = 1024
)

// startDelayProxy listens on addr and forwards every connection to upstream, delaying each
// direction by oneWay. It stops when the test ends.
func startDelayProxy(t testing.TB, addr, upstream string, oneWay time.Duration) *delayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{ln: ln, upstream: upstream, delay: oneWay, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// port is the port the proxy listens on.
func (p *delayProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.handle(c.(*net.TCPConn))
		}()
	}
}

// handle proxies one connection until both directions are done or one fails.
func (p *delayProxy) handle(client *net.TCPConn) {
	defer client.Close()
	uc, err := net.DialTimeout("tcp", p.upstream, 10*time.Second)
	if err != nil {
		return
	}
	upstream := uc.(*net.TCPConn)
	if !p.track(upstream) {
		upstream.Close()
		return
	}
	defer p.untrack(upstream)
	defer upstream.Close()

	// A failed direction closes both connections, which ends the other direction too.
	abort := func() { client.Close(); upstream.Close() }
	done := make(chan struct{})
	go func() {
		defer close(done)
		delayLine(upstream, client, p.delay, &p.up, abort)
	}()
	delayLine(client, upstream, p.delay, &p.down, abort)
	<-done
}

// chunk is a piece of a stream and when to deliver it; a nil data marks the end of the stream.
type chunk struct {
	data []byte
	due  time.Time
	err  error // why the stream ended, nil for EOF
}

// delayLine copies src to dst, delivering each chunk delay after it was read, then half-closes
// dst. On a read or write error it calls abort, which must close src and dst, and returns the
// error; after a write error it drains the queue until the reader, unblocked by abort, ends.
func delayLine(dst, src *net.TCPConn, delay time.Duration, count *atomic.Int64, abort func()) error {
	q := make(chan chunk, lineChunks)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, chunkSize) // queued, so each chunk needs its own buffer
			n, err := src.Read(buf)
			now := time.Now()
			if n > 0 {
				q <- chunk{data: buf[:n], due: now.Add(delay)}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				q <- chunk{due: now.Add(delay), err: err}
				return
			}
		}
	}()

	var werr error
	for c := range q {
		if werr != nil {
			continue // draining
		}
		if wait := time.Until(c.due); wait > 0 {
			time.Sleep(wait) // the delay itself: this chunk's time has not come
		}
		switch {
		case c.data != nil:
			if _, err := dst.Write(c.data); err != nil {
				werr = fmt.Errorf("write: %w", err)
				abort()
				continue
			}
			count.Add(int64(len(c.data)))
		case c.err != nil:
			werr = fmt.Errorf("read: %w", c.err)
			abort()
		default:
			if err := dst.CloseWrite(); err != nil {
				werr = fmt.Errorf("close write: %w", err)
				abort()
			}
		}
	}
	return werr
}

func (p *delayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *delayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// close stops accepting, breaks every connection and waits for the goroutines.
func (p *delayProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
