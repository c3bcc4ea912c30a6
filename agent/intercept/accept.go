package intercept

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// ErrNotLoopback refuses a --to-pod Dial to anything but the pod's localhost: --to-pod lets the
// developer reach ports that only listen there, not use the pod as a hop into the cluster
// (which the manager's own tunnel does, under its rules).
var ErrNotLoopback = errors.New("--to-pod connections may only reach the pod's localhost")

// lingerTimeout bounds how long a finished Accept stream waits for the manager to end it, so
// that the last data and the half-close are delivered rather than cut by a cancel.
const lingerTimeout = 5 * time.Second

// Accepter opens Accept streams; managerv1.ManagerClient is one.
type Accepter interface {
	Accept(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[managerv1.TunnelMessage, managerv1.TunnelMessage], error)
}

// ToPod accepts --to-pod connections: for each IncomingDial it opens an Accept stream, and serves
// the developer's Dial, which the manager forwards on it, from the pod's network namespace, to
// 127.0.0.1 or ::1 only. NewToPod → Accept… → Close.
type ToPod struct {
	log  *slog.Logger
	mgr  Accepter
	dial tunnel.DialFunc

	ctx    context.Context // ends every stream at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards closed, and orders wg.Add before Close's Wait
	closed bool
}

// NewToPod returns a ToPod that dials with dial ((*net.Dialer).DialContext in a pod).
func NewToPod(log *slog.Logger, mgr Accepter, dial tunnel.DialFunc) (*ToPod, error) {
	switch {
	case log == nil:
		return nil, errors.New("intercept: nil logger")
	case mgr == nil:
		return nil, errors.New("intercept: nil accepter")
	case dial == nil:
		return nil, errors.New("intercept: nil dial func")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &ToPod{log: log, mgr: mgr, dial: dial, ctx: ctx, cancel: cancel}, nil
}

// Accept serves the connection d announces, in the background; it never blocks.
func (p *ToPod) Accept(session string, d *managerv1.IncomingDial) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		log := p.log.With("session", session, "conn", d.GetConnId(), "intercept", d.GetInterceptId())
		if err := p.serve(log, session, d.GetConnId()); err != nil && p.ctx.Err() == nil {
			log.Warn("--to-pod connection failed", "err", err)
			return
		}
		log.Debug("--to-pod connection done")
	}()
}

// serve runs one Accept stream. It ends as tunnel.Server.Serve does, and at Close.
func (p *ToPod) serve(log *slog.Logger, session, connID string) error {
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	// The protocol decides how the stream may end, below; Target is where it is first known.
	var proto managerv1.Protocol
	srv, err := tunnel.NewServer(tunnel.ServerConfig{Target: func(d *managerv1.Dial) (string, string, error) {
		proto = d.GetProtocol()
		return LoopbackTarget(d)
	}}, p.dial, log)
	if err != nil {
		return err
	}
	stream, err := p.mgr.Accept(ctx)
	if err != nil {
		return fmt.Errorf("open accept stream: %w", err)
	}
	first := &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: session, ConnId: connID}}}
	if err := stream.Send(first); err != nil {
		// Send reports a stream that is gone as io.EOF; Recv has the status.
		if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
		return fmt.Errorf("send accept: %w", err)
	}
	if err := srv.Serve(stream); err != nil {
		return err
	}
	// Serve is done: the dial was answered with a refusal, both TCP halves are closed, or a UDP
	// flow ended. The stream is ours to end. Cancelling it at once could reset what is still in
	// flight (the refusal, the last bytes, the half-close), so close our side and let the manager
	// end it, within lingerTimeout. A UDP flow that went idle is the exception: Serve returns with
	// its receive loop still waiting, which must not be joined by a second reader, and an idle
	// flow has nothing in flight, so the cancel ends it.
	if err := stream.CloseSend(); err != nil || proto == managerv1.Protocol_PROTOCOL_UDP {
		return nil
	}
	t := time.AfterFunc(lingerTimeout, cancel)
	defer t.Stop()
	var m managerv1.TunnelMessage
	for stream.RecvMsg(&m) == nil {
	}
	return nil
}

// Close ends every --to-pod connection and waits for them. It may be called more than once.
func (p *ToPod) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

// LoopbackTarget is the tunnel.ServerConfig.Target of --to-pod Dials: the address must be a
// loopback IP or "localhost" with a port; "localhost" becomes 127.0.0.1, so that no name is
// resolved.
func LoopbackTarget(d *managerv1.Dial) (network, address string, err error) {
	switch d.GetProtocol() {
	case managerv1.Protocol_PROTOCOL_TCP:
		network = "tcp"
	case managerv1.Protocol_PROTOCOL_UDP:
		network = "udp"
	default:
		return "", "", fmt.Errorf("protocol %v", d.GetProtocol())
	}
	host, port, err := net.SplitHostPort(d.GetAddress())
	if err != nil {
		return "", "", fmt.Errorf("address %q: %w", d.GetAddress(), err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", "", fmt.Errorf("address %q: bad port", d.GetAddress())
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" || !ip.Unmap().IsLoopback() {
		return "", "", fmt.Errorf("address %q: %w", d.GetAddress(), ErrNotLoopback)
	}
	return network, net.JoinHostPort(ip.Unmap().String(), port), nil
}
