package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"

	"teledock.dev/teledock/tunnel"
)

// framedOffFor is how long TCP flows use Tunnel streams after a framed tunnel failed before the
// manager answered (the manager's pod restarting, say), so that a broken path costs one failed
// attempt now and then rather than one per flow.
const framedOffFor = 5 * time.Second

// framedDialer opens framed tunnels (tunnel.FramedConn) for the TCP flows of a session that uses
// the port-forward: each flow is a stream pair of its own on one shared port-forward to the
// manager pod's "client-raw" port, carrying raw bytes (with a frame header per write) rather than
// a gRPC stream in HTTP/2 in the port-forward's stream. The API server and the kubelet see one
// port-forward, as with kubectl's.
type framedDialer struct {
	f      *forwarder
	log    *slog.Logger
	spares *spares[*framedStream]

	mu       sync.Mutex // guards the fields below; held while connecting, so flows share one dial
	conn     httpstream.Connection
	target   managerTarget
	next     uint64    // request IDs of the stream pairs
	offUntil time.Time // see framedOffFor
}

func newFramedDialer(f *forwarder, log *slog.Logger) *framedDialer {
	d := &framedDialer{f: f, log: log}
	d.spares = newSpares(d.stream, (*framedStream).reset, func() bool { return false }, log)
	return d
}

// open starts a framed tunnel to dst for the session. ErrNoRaw (wrapped): use a Tunnel stream;
// a *tunnel.DialError: the destination's answer.
func (d *framedDialer) open(ctx context.Context, sessionID string, dst netip.AddrPort) (tunnel.RawEnd, error) {
	if sessionID == "" {
		return nil, fmt.Errorf("%w: no session", ErrNoRaw)
	}
	end := func(s *framedStream) tunnel.RawEnd { return tunnel.NewFramedConn(s, s.reset) }
	return openRaw(ctx, d.spares, end, "", sessionID, dst, func(s *framedStream, err error) { d.failed(s.conn, err) })
}

// failed turns framed tunnels off for a while and drops conn, whose next user connects anew.
func (d *framedDialer) failed(conn httpstream.Connection, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log.Debug("framed tunnel failed before its answer; flows use streams for a while", "err", err, "for", framedOffFor)
	d.offUntil = time.Now().Add(framedOffFor)
	if d.conn == conn {
		_ = d.conn.Close()
		d.conn = nil
	}
}

// stream creates a stream pair for one flow on the shared port-forward, which it opens first when
// there is none or the last one broke.
func (d *framedDialer) stream(ctx context.Context) (*framedStream, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Now().Before(d.offUntil) {
		return nil, errors.New("off after a failure")
	}
	if d.conn != nil {
		select {
		case <-d.conn.CloseChan():
			d.conn = nil
		default:
		}
	}
	if d.conn == nil {
		t, err := findManager(ctx, d.f.kube, d.f.cfg)
		if err != nil {
			return nil, err
		}
		if t.rawPort == 0 {
			// A manager that predates framed tunnels; its next pod may have the port.
			d.offUntil = time.Now().Add(framedOffFor)
			return nil, errors.New("the traffic-manager has no client-raw port")
		}
		conn, err := d.f.connect(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("port-forward to %s: %w", t, err)
		}
		d.conn, d.target = conn, t
	}
	d.next++
	s, err := newFramedStream(d.conn, d.target.rawPort, strconv.FormatUint(d.next, 10))
	if err != nil {
		_ = d.conn.Close()
		d.conn = nil
		return nil, fmt.Errorf("port-forward to %s: %w", d.target, err)
	}
	return s, nil
}

func (d *framedDialer) close() {
	d.spares.close()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		_ = d.conn.Close()
		d.conn = nil
	}
}

// framedStream is one flow's stream pair of a port-forward. Close half-closes the data stream (the
// framing has ended the flow cleanly by then); reset ends it at once. Either way the pair leaves
// the connection's stream table.
type framedStream struct {
	conn httpstream.Connection
	data httpstream.Stream
	errs httpstream.Stream

	mu    sync.Mutex // guards timer
	timer *time.Timer
	once  sync.Once
}

func newFramedStream(conn httpstream.Connection, port int32, requestID string) (*framedStream, error) {
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(int(port)))
	h.Set(corev1.PortForwardRequestIDHeader, requestID)
	errs, err := conn.CreateStream(h)
	if err != nil {
		return nil, fmt.Errorf("create error stream: %w", err)
	}
	// The error stream is read-only for the client.
	_ = errs.Close()
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		_ = errs.Reset()
		conn.RemoveStreams(errs)
		return nil, fmt.Errorf("create data stream: %w", err)
	}
	s := &framedStream{conn: conn, data: data, errs: errs}
	go s.watchErrors()
	return s, nil
}

// watchErrors resets the data stream when the kubelet reports a failure (nothing listens on the
// port, the pod went away): the framed reader then reports the flow as aborted.
func (s *framedStream) watchErrors() {
	if msg, _ := io.ReadAll(s.errs); len(msg) > 0 {
		s.reset()
	}
}

func (s *framedStream) Read(p []byte) (int, error)  { return s.data.Read(p) }
func (s *framedStream) Write(p []byte) (int, error) { return s.data.Write(p) }

// Close ends the data stream cleanly.
func (s *framedStream) Close() error {
	s.end(s.data.Close)
	return nil
}

func (s *framedStream) reset() { s.end(s.data.Reset) }

func (s *framedStream) end(how func() error) {
	s.once.Do(func() {
		s.mu.Lock()
		if s.timer != nil {
			s.timer.Stop()
		}
		s.mu.Unlock()
		_ = how()
		s.conn.RemoveStreams(s.data, s.errs)
	})
}

// SetDeadline is terminal, as streamConn's is: when it passes, the stream is reset. A zero time
// cancels it. DialRaw uses it to bound the hello and result.
func (s *framedStream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !t.IsZero() {
		s.timer = time.AfterFunc(time.Until(t), s.reset)
	}
	return nil
}
