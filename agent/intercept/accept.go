package intercept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"google.golang.org/grpc"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// ErrNotLoopback refuses a --to-pod Dial to anything but the pod's localhost: --to-pod lets the
// developer reach ports that only listen there, not use the pod as a hop into the cluster
// (which the manager's own tunnel does, under its rules).
var ErrNotLoopback = errors.New("--to-pod connections may only reach the pod's localhost")

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

// serve answers one --to-pod connection (tunnel.Server.Accept); it ends as that does, and at Close.
func (p *ToPod) serve(log *slog.Logger, session, connID string) error {
	srv, err := tunnel.NewServer(tunnel.ServerConfig{Target: LoopbackTarget}, p.dial, log)
	if err != nil {
		return err
	}
	open := func(ctx context.Context) (tunnel.AcceptStream, error) { return p.mgr.Accept(ctx) }
	return srv.Accept(p.ctx, open, &managerv1.Accept{SessionId: session, ConnId: connID})
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
	if network = tunnel.NetworkOf(d.GetProtocol()); network == "" {
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
