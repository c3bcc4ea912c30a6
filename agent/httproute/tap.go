package httproute

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// tapDeliveryTimeout bounds one delivery (dial, write, response): a handler that stops reading
// must not keep a Tap from dropping what it cannot take, nor its connection open forever.
var tapDeliveryTimeout = 10 * time.Second

// tapCopy is a request as the wiretaps that match it see it. Its body is filled while the
// request body streams to its real destination, and frozen when the copy is offered.
type tapCopy struct {
	method, target string
	fields         []field // in the order sent, Host included

	mu     sync.Mutex
	body   []byte
	max    int
	frozen bool
	once   sync.Once
}

// newTapCopy starts the copy of an HTTP/1.x request for taps.
func newTapCopy(req *head, taps []*Tap) *tapCopy {
	cp := &tapCopy{method: req.method, target: req.target, fields: req.fields, max: maxBody(taps)}
	if _, ok := req.header["Host"]; !ok {
		cp.fields = append([]field{{name: "Host"}}, cp.fields...)
	}
	return cp
}

// newTapCopyH2 starts the copy of an HTTP/2 request for taps.
func newTapCopyH2(r *http.Request, taps []*Tap) *tapCopy {
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	cp := &tapCopy{method: r.Method, target: target, fields: []field{{name: "Host", value: r.Host}}, max: maxBody(taps)}
	for _, k := range slices.Sorted(maps.Keys(r.Header)) {
		for _, v := range r.Header[k] {
			cp.fields = append(cp.fields, field{name: k, value: v})
		}
	}
	return cp
}

func maxBody(taps []*Tap) int {
	n := 0
	for _, t := range taps {
		n = max(n, t.bodyMax)
	}
	return n
}

// Write keeps what fits of the body; it never fails, so a full copy never stops the request.
func (cp *tapCopy) Write(p []byte) (int, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if !cp.frozen {
		cp.body = append(cp.body, p[:min(len(p), cp.max-len(cp.body))]...)
	}
	return len(p), nil
}

// writer is the tee of a relay: nil when no wiretap wants a copy.
func (cp *tapCopy) writer() io.Writer {
	if cp == nil {
		return nil
	}
	return cp
}

// offer hands the copy to taps once, without waiting for any of them.
func (cp *tapCopy) offer(taps []*Tap) {
	if cp == nil {
		return
	}
	cp.once.Do(func() {
		cp.mu.Lock()
		cp.frozen = true
		cp.mu.Unlock()
		for _, t := range taps {
			t.offer(cp)
		}
	})
}

// tapHopHeaders are fields a copy does not carry: they describe the client's connection or
// message framing, and the copy is a new message on another connection.
var tapHopHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"content-length": true, "upgrade": true, "te": true, "trailer": true, "expect": true,
}

// encode writes the copy as an HTTP/1.1 request carrying at most bodyMax body bytes.
func (cp *tapCopy) encode(bodyMax int) []byte {
	body := cp.body[:min(len(cp.body), bodyMax)]
	var b bytes.Buffer
	b.WriteString(cp.method + " " + cp.target + " HTTP/1.1\r\n")
	for _, f := range cp.fields {
		if !tapHopHeaders[strings.ToLower(f.name)] {
			b.WriteString(f.name + ": " + f.value + "\r\n")
		}
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.Write(body)
	return b.Bytes()
}

// Tap fields; see the Tap type.
type tapState struct {
	log     *slog.Logger
	dial    Dialer
	bodyMax int
	stats   *Stats
	queue   chan *tapCopy

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu   sync.Mutex
	conn Conn // the connection to the handler, for Close to unblock the worker

	// Owned by the worker.
	r       *bufio.Reader
	discard *bufio.Writer
}

func newTap(cfg TapConfig) *Tap {
	t := &Tap{tapState{log: cfg.Log, dial: cfg.Dial, bodyMax: cfg.Body, stats: cfg.Stats}}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.bodyMax <= 0 {
		t.bodyMax = DefaultWiretapBody
	}
	if t.stats == nil {
		t.stats = new(Stats)
	}
	q := cfg.Queue
	if q <= 0 {
		q = DefaultWiretapQueue
	}
	t.queue = make(chan *tapCopy, q)
	t.discard = bufio.NewWriterSize(io.Discard, 4096)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(1)
	go t.run()
	return t
}

// offer queues cp, or drops it when the queue is full: the request path never waits on a Tap.
func (t *Tap) offer(cp *tapCopy) {
	if t.ctx.Err() != nil {
		t.stats.Dropped.Add(1)
		return
	}
	select {
	case t.queue <- cp:
	default:
		t.stats.Dropped.Add(1)
		t.log.Debug("wiretap queue full; copy dropped", "method", cp.method, "target", cp.target)
	}
}

func (t *Tap) close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		t.mu.Lock()
		if t.conn != nil {
			t.conn.Close()
		}
		t.mu.Unlock()
		t.wg.Wait()
		for {
			select {
			case <-t.queue:
				t.stats.Dropped.Add(1)
			default:
				return
			}
		}
	})
	return nil
}

func (t *Tap) run() {
	defer t.wg.Done()
	defer t.closeConn()
	for {
		select {
		case <-t.ctx.Done():
			return
		case cp := <-t.queue:
			if t.ctx.Err() != nil {
				t.stats.Dropped.Add(1)
				return
			}
			if err := t.deliver(cp); err != nil {
				t.stats.Dropped.Add(1)
				t.log.Debug("wiretap copy not delivered", "method", cp.method, "target", cp.target, "error", err)
				continue
			}
			t.stats.Copied.Add(1)
		}
	}
}

// deliver sends one copy; a kept connection that the handler closed meanwhile gets one retry
// on a new connection.
func (t *Tap) deliver(cp *tapCopy) error {
	msg := cp.encode(t.bodyMax)
	for {
		reused := t.conn != nil
		err := t.send(msg, cp.method)
		if err == nil {
			return nil
		}
		t.closeConn()
		if !reused || t.ctx.Err() != nil {
			return err
		}
	}
}

func (t *Tap) send(msg []byte, method string) error {
	if t.conn == nil {
		if err := t.connect(); err != nil {
			return err
		}
	}
	conn := t.conn
	timer := time.AfterFunc(tapDeliveryTimeout, func() { conn.Close() })
	defer timer.Stop()
	err := t.exchange(conn, msg, method)
	if !timer.Stop() {
		return fmt.Errorf("wiretap handler: %w", context.DeadlineExceeded)
	}
	return err
}

func (t *Tap) connect() error {
	if t.dial == nil {
		return errors.New("wiretap: no dialer")
	}
	ctx, cancel := context.WithTimeout(t.ctx, tapDeliveryTimeout)
	defer cancel()
	conn, err := t.dial(ctx)
	if err != nil {
		return fmt.Errorf("dial wiretap handler: %w", err)
	}
	if conn == nil {
		return errors.New("dial wiretap handler: no connection")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx.Err() != nil {
		conn.Close()
		return fmt.Errorf("dial wiretap handler: %w", t.ctx.Err())
	}
	t.conn = conn
	t.r = bufio.NewReaderSize(conn, 4096)
	return nil
}

// exchange writes msg and reads the response, discarding it.
func (t *Tap) exchange(conn Conn, msg []byte, method string) error {
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("write to wiretap handler: %w", err)
	}
	for {
		resp, _, err := readHead(t.r, false)
		if err != nil {
			return fmt.Errorf("read wiretap handler response: %w", err)
		}
		if resp.status == 0 {
			return fmt.Errorf("read wiretap handler response: %w", errMalformed)
		}
		if resp.status < 200 {
			continue
		}
		end := responseFraming(method, resp)
		if err := (relay{r: t.r, w: t.discard}).responseBody(end, resp); err != nil {
			return fmt.Errorf("read wiretap handler response: %w", err)
		}
		if end == endClose || !resp.keepAlive() {
			t.closeConn()
		}
		return nil
	}
}

func (t *Tap) closeConn() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
		t.r = nil
	}
}
