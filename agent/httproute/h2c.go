package httproute

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
)

// HTTP/2 (h2c with prior knowledge, which is how gRPC speaks without TLS) multiplexes streams on
// one connection, so it cannot be split at byte boundaries like HTTP/1.1: the connection is
// terminated here by net/http's server, and each stream is proxied on its own to the
// destination its request picks, over HTTP/2 connections of this client connection.

func h2cProtocols() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

// serveH2C serves the HTTP/2 connection rc until it ends or ctx does.
func serveH2C(ctx context.Context, rc *replayConn, cfg *config) error {
	nc := newNetConn(rc)
	h := &h2handler{cfg: cfg, proxies: make(map[string]*h2proxy)}
	h.dialCtx, h.cancelDials = context.WithCancel(ctx)
	defer h.cancelDials()
	h.idle = sync.NewCond(&h.mu)
	srv := &http.Server{
		Handler:     h,
		Protocols:   h2cProtocols(),
		ErrorLog:    slog.NewLogLogger(cfg.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	ln := newOneListener(nc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-nc.closed: // the server is done with the connection
	case <-ctx.Done():
	}
	srv.Close() //nolint:errcheck // closing what is left
	<-served
	nc.Close()
	h.shutdown()
	return nil
}

// oneListener hands out one connection, then waits until it is closed.
type oneListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	addr      net.Addr
}

func newOneListener(c net.Conn) *oneListener {
	l := &oneListener{conns: make(chan net.Conn, 1), closed: make(chan struct{}), addr: c.LocalAddr()}
	l.conns <- c
	return l
}

func (l *oneListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *oneListener) Addr() net.Addr { return l.addr }

// h2handler routes the streams of one client connection.
type h2handler struct {
	cfg         *config
	dialCtx     context.Context // ends dials in progress when the connection does
	cancelDials context.CancelFunc

	mu      sync.Mutex
	idle    *sync.Cond // signalled when active or dials drops
	active  int        // handlers running
	dials   int        // upstream dials in progress
	closing bool
	proxies map[string]*h2proxy // by dest name
	conns   []net.Conn          // every upstream connection, closed at the end
}

// h2proxy proxies streams to one destination over its own Transport: the Transport's dialer
// ignores the address, so destinations must not share connection pools.
type h2proxy struct {
	rp *httputil.ReverseProxy
	tr *http.Transport
}

func (h *h2handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.enter() {
		http.Error(w, "teledock: connection closing", http.StatusServiceUnavailable)
		return
	}
	defer h.leave()
	// HTTP/2 carries the host as :authority, which net/http puts in r.Host, not in r.Header: a
	// Host filter matches it as it does an HTTP/1.1 Host line.
	hdr := r.Header
	if r.Host != "" && len(hdr.Values("Host")) == 0 {
		hdr = hdr.Clone()
		hdr.Set("Host", r.Host)
	}
	d, taps := h.cfg.route(r.URL.Path, hdr)
	if len(taps) > 0 {
		cp := newTapCopyH2(r, taps)
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			cp.offer(taps)
		} else {
			r.Body = &tapBody{ReadCloser: r.Body, cp: cp, taps: taps}
		}
	}
	h.proxy(d).rp.ServeHTTP(w, r)
}

// enter counts a running handler, unless the connection is shutting down: shutdown must be able
// to wait for every handler that uses a Transport before closing it.
func (h *h2handler) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.active++
	return true
}

func (h *h2handler) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active--
	h.idle.Broadcast()
}

// shutdown waits for the handlers and dials, and closes the upstream connections. Closing only
// idle connections would not do: a connection whose last stream is still being torn down does
// not count as idle.
func (h *h2handler) shutdown() {
	h.mu.Lock()
	h.closing = true
	for h.active > 0 {
		h.idle.Wait()
	}
	h.cancelDials()
	for h.dials > 0 {
		h.idle.Wait()
	}
	proxies, conns := h.proxies, h.conns
	h.mu.Unlock()
	for _, p := range proxies {
		p.tr.CloseIdleConnections()
	}
	for _, c := range conns {
		c.Close()
	}
}

// dial opens an upstream connection for a Transport, unless the client connection is ending.
func (h *h2handler) dial(ctx context.Context, d dest) (net.Conn, error) {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil, net.ErrClosed
	}
	h.dials++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.dials--
		h.idle.Broadcast()
		h.mu.Unlock()
	}()
	// Dials end with the client connection too, not only with the request.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(h.dialCtx, cancel)
	defer stop()
	conn, err := dialDest(ctx, d)
	if err != nil {
		return nil, err
	}
	nc := newNetConn(&onceConn{Conn: conn})
	h.mu.Lock()
	h.conns = append(h.conns, nc)
	h.mu.Unlock()
	return nc, nil
}

func (h *h2handler) proxy(d dest) *h2proxy {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.proxies[d.name]; p != nil {
		return p
	}
	tr := &http.Transport{
		Protocols: h2cProtocols(),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return h.dial(ctx, d)
		},
		// The request must reach the destination as sent: no added Accept-Encoding, and no
		// transparent decompression of the answer.
		DisableCompression: true,
		IdleConnTimeout:    90 * time.Second,
	}
	log := h.cfg.log
	p := &h2proxy{tr: tr, rp: &httputil.ReverseProxy{
		Rewrite:        rewriteKeep,
		Transport:      tr,
		FlushInterval:  -1, // gRPC and other streams: every write goes out at once
		ModifyResponse: trailersOnly,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				log.Warn("cannot proxy a request", "destination", d.name, "path", r.URL.Path, "error", err)
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, badGatewayText(d)) //nolint:errcheck // the client may be gone
		},
	}}
	h.proxies[d.name] = p
	return p
}

// trailersOnly keeps a gRPC "trailers-only" answer (an error: grpc-status in the one HEADERS
// frame that ends the stream) valid through the proxy. net/http reads it as a response whose
// header holds grpc-status, and the proxy may flush that header before it ends the stream, which
// gRPC clients reject ("closed the stream without sending trailers"); sent as trailers, the
// status arrives after the (empty) body whatever the flushing.
func trailersOnly(resp *http.Response) error {
	if resp.Header.Get("Grpc-Status") == "" || len(resp.Trailer) > 0 || resp.ContentLength > 0 {
		return nil
	}
	for _, k := range []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"} {
		if v, ok := resp.Header[k]; ok {
			if resp.Trailer == nil {
				resp.Trailer = http.Header{}
			}
			resp.Trailer[k] = v
			delete(resp.Header, k)
		}
	}
	return nil
}

// rewriteKeep sends the request on as the client sent it: same authority, query and forwarding
// headers (ReverseProxy strips the latter before Rewrite, and nothing is added here).
func rewriteKeep(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = pr.In.Host
	if pr.Out.URL.Host == "" {
		pr.Out.URL.Host = "upstream"
	}
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = v
		}
	}
}

// tapBody copies a request body for wiretaps as the proxy reads it, and offers the copy when
// the body ends.
type tapBody struct {
	io.ReadCloser
	cp   *tapCopy
	taps []*Tap
}

func (b *tapBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.cp.Write(p[:n]) //nolint:errcheck // never fails
	if err != nil {
		b.cp.offer(b.taps)
	}
	return n, err
}

func (b *tapBody) Close() error {
	err := b.ReadCloser.Close()
	b.cp.offer(b.taps)
	return err
}
