package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// forwarder is a gRPC context dialer: every connection gRPC asks for is a fresh port-forward to the
// traffic-manager pod, returned as a net.Conn over the forward's data stream.
//
// Why not kubectl's model (a local listener that forwards accepted connections)? That model adds a
// TCP hop and a copy on every byte, needs its own restart logic when the forward breaks, and hides
// why a forward failed. Here gRPC's own reconnect loop drives everything: when the forward breaks,
// the transport fails, gRPC dials again, and the dial looks the pod up again, which follows a
// restarted manager to its new pod. One port-forward per gRPC connection also lets a later
// transport open several connections (several forwards) to spread load.
type forwarder struct {
	kube kubernetes.Interface
	rest *rest.Config
	cfg  Config
	log  *slog.Logger

	mu sync.Mutex // guards the fields below
	// lastErr is the last dial failure; gRPC flattens dial errors into an Unavailable status, and
	// the session needs the typed error (ErrNoManager, a 403) to report it.
	lastErr error
	conns   map[*streamConn]struct{}
}

func newForwarder(kube kubernetes.Interface, rc *rest.Config, cfg Config, log *slog.Logger) *forwarder {
	return &forwarder{kube: kube, rest: rc, cfg: cfg, log: log, conns: map[*streamConn]struct{}{}}
}

// dial has the signature of grpc.WithContextDialer; the address gRPC passes is ignored because the
// target is the manager pod, looked up on each dial.
func (f *forwarder) dial(ctx context.Context, _ string) (net.Conn, error) {
	c, err := f.open(ctx)
	f.mu.Lock()
	f.lastErr = err
	if c != nil {
		f.conns[c] = struct{}{}
	}
	f.mu.Unlock()
	if err != nil {
		f.log.Debug("port-forward failed", "err", err)
		return nil, err
	}
	f.log.Debug("port-forward open", "target", c.target)
	return c, nil
}

// dialError returns the last dial failure, or nil when the last dial succeeded.
func (f *forwarder) dialError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// closeAll breaks every open forward. The session calls it when RPCs time out on a transport that
// gRPC still thinks is healthy (a half-dead API-server connection), so that gRPC dials afresh.
func (f *forwarder) closeAll() {
	f.mu.Lock()
	conns := make([]*streamConn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (f *forwarder) forget(c *streamConn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

func (f *forwarder) open(ctx context.Context) (*streamConn, error) {
	target, err := findManager(ctx, f.kube, f.cfg)
	if err != nil {
		return nil, err
	}
	conn, err := f.connect(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s: %w", target, err)
	}
	c, err := newStreamConn(conn, target, f.forget)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("port-forward to %s: %w", target, err)
	}
	return c, nil
}

// connect upgrades a request to the pod's portforward subresource. WebSocket comes first, as with
// kubectl since 1.31, because it passes proxies and load balancers that drop SPDY; SPDY remains the
// fallback for API servers that refuse the WebSocket upgrade.
func (f *forwarder) connect(ctx context.Context, t managerTarget) (httpstream.Connection, error) {
	u := f.kube.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(t.namespace).Name(t.pod).SubResource("portforward").URL()

	transport, upgrader, err := spdy.RoundTripperFor(f.rest)
	if err != nil {
		return nil, fmt.Errorf("spdy transport: %w", err)
	}
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	ws, err := portforward.NewSPDYOverWebsocketDialer(u, f.rest)
	if err != nil {
		return nil, fmt.Errorf("websocket transport: %w", err)
	}
	dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})

	// httpstream.Dialer takes no context; dial in the background and, if ctx ends first, close the
	// connection whenever the dial returns so that it does not leak.
	type result struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				_ = r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// streamConn is a net.Conn over one port-forward's data stream. It owns the whole forward: closing
// it closes the forward's connection to the API server.
//
// The forward ends when: the conn is closed (by gRPC or closeAll); the API-server connection breaks
// (reads fail); or the kubelet reports an error on the error stream (nothing listens on the port,
// the pod went away), in which case reads return that error.
type streamConn struct {
	conn   httpstream.Connection
	data   httpstream.Stream
	target managerTarget
	forget func(*streamConn)

	closeOnce sync.Once
	mu        sync.Mutex // guards remoteErr and timer
	remoteErr error
	timer     *time.Timer
}

var _ net.Conn = (*streamConn)(nil)

// requestID is constant: each forward carries exactly one stream pair.
const requestID = "0"

func newStreamConn(conn httpstream.Connection, t managerTarget, forget func(*streamConn)) (*streamConn, error) {
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(int(t.port)))
	h.Set(corev1.PortForwardRequestIDHeader, requestID)
	errStream, err := conn.CreateStream(h)
	if err != nil {
		return nil, fmt.Errorf("create error stream: %w", err)
	}
	// The error stream is read-only for the client.
	_ = errStream.Close()

	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		return nil, fmt.Errorf("create data stream: %w", err)
	}
	c := &streamConn{conn: conn, data: data, target: t, forget: forget}
	go c.watchErrors(errStream)
	return c, nil
}

// watchErrors waits for the kubelet's verdict on the forward. A message means the forward failed
// (for example "connection refused" while the manager starts); the conn is closed so that gRPC
// sees the failure at once instead of at its next keepalive.
func (c *streamConn) watchErrors(s io.Reader) {
	// A read error without a message means the forward ended or its connection broke; the data
	// stream reports that by itself.
	msg, _ := io.ReadAll(s)
	if len(msg) == 0 {
		return
	}
	c.mu.Lock()
	c.remoteErr = fmt.Errorf("port-forward to %s: %s", c.target, msg)
	c.mu.Unlock()
	_ = c.Close()
}

func (c *streamConn) wrap(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.remoteErr != nil {
		return c.remoteErr
	}
	return err
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	return n, c.wrap(err)
}

func (c *streamConn) Write(p []byte) (int, error) {
	n, err := c.data.Write(p)
	return n, c.wrap(err)
}

// Close resets the data stream and closes the forward. It is idempotent.
func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.mu.Unlock()
		_ = c.data.Reset()
		_ = c.conn.Close()
		if c.forget != nil {
			c.forget(c)
		}
	})
	return nil
}

type forwardAddr string

func (a forwardAddr) Network() string { return "portforward" }
func (a forwardAddr) String() string  { return string(a) }

func (c *streamConn) LocalAddr() net.Addr  { return forwardAddr("teledock-daemon") }
func (c *streamConn) RemoteAddr() net.Addr { return forwardAddr(c.target.String()) }

// SetDeadline and friends are terminal: when the deadline passes, the conn is closed. gRPC's only
// use of deadlines on a client conn is in transport Close, which sets them to bound the final
// GOAWAY write and then closes the conn anyway; streams of a port-forward cannot interrupt a
// blocked Read or Write in any other way. A zero time cancels a pending deadline.
func (c *streamConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if t.IsZero() {
		return nil
	}
	c.timer = time.AfterFunc(time.Until(t), func() { _ = c.Close() })
	return nil
}

func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.SetDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }
