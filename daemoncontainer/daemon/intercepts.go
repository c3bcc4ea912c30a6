package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/intercept"
)

// Intercepts is what the API needs from the connection's intercepts; *intercept.Intercepts has it.
type Intercepts interface {
	Create(ctx context.Context, req intercept.Request) (*managerv1.InterceptInfo, error)
	Remove(ctx context.Context, name string) error
	List() []*managerv1.InterceptInfo
	// Counters are the manager's request counters of filtered intercepts and wiretaps, by name.
	Counters(ctx context.Context) (map[string]*managerv1.InterceptCounters, error)
	Workloads(ctx context.Context, namespace string) (*managerv1.ListWorkloadsResponse, error)
	// DialVolumes opens a connection to the SFTP server of the intercept's traffic-agent.
	DialVolumes(ctx context.Context, name string) (net.Conn, error)
}

var _ Intercepts = (*intercept.Intercepts)(nil)

func (d *Daemon) CreateIntercept(ctx context.Context, r *daemonv1.CreateInterceptRequest) (*managerv1.InterceptInfo, error) {
	req, err := interceptRequest(r)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	info, err := d.icpt.Create(ctx, req)
	if err != nil {
		d.log.Info("intercept not created", "name", r.GetName(), "err", err)
		return nil, toStatus(err)
	}
	if r.GetHeld() {
		d.holds.expect(info.GetName(), info.GetId())
	}
	return info, nil
}

func (d *Daemon) HoldIntercept(r *daemonv1.HoldInterceptRequest, stream daemonv1.Daemon_HoldInterceptServer) error {
	return d.holds.hold(stream.Context(), r.GetName(), stream.Send)
}

func (d *Daemon) RemoveIntercept(ctx context.Context, r *daemonv1.RemoveInterceptRequest) (*daemonv1.RemoveInterceptResponse, error) {
	if err := d.icpt.Remove(ctx, r.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &daemonv1.RemoveInterceptResponse{}, nil
}

func (d *Daemon) ListIntercepts(context.Context, *daemonv1.ListInterceptsRequest) (*managerv1.ListInterceptsResponse, error) {
	return &managerv1.ListInterceptsResponse{Intercepts: d.icpt.List()}, nil
}

func (d *Daemon) ListWorkloads(ctx context.Context, r *daemonv1.ListWorkloadsRequest) (*managerv1.ListWorkloadsResponse, error) {
	resp, err := d.icpt.Workloads(ctx, r.GetNamespace())
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// interceptRequest checks what the CLI sent; the CLI has resolved container names to IPs already.
func interceptRequest(r *daemonv1.CreateInterceptRequest) (intercept.Request, error) {
	req := intercept.Request{
		Name:        r.GetName(),
		Workload:    r.GetWorkload(),
		Service:     r.GetService(),
		ServicePort: r.GetServicePort(),
		Mechanism:   r.GetMechanism(),
		Replace:     r.GetReplace(),
		HTTPFilter:  r.GetHttpFilter(),
		Wiretap:     r.GetWiretap(),
	}
	if p := r.GetLocalPort(); p < 0 || p > 65535 {
		return req, fmt.Errorf("local port %d out of range", p)
	}
	req.LocalPort = uint16(r.GetLocalPort())
	if a := r.GetAddress(); a != "" {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return req, fmt.Errorf("address %q is not an IP address", a)
		}
		req.Address = addr
	}
	for _, p := range r.GetToPod() {
		if p.GetPort() < 1 || p.GetPort() > 65535 {
			return req, fmt.Errorf("--to-pod port %d out of range", p.GetPort())
		}
		tp := intercept.ToPod{Port: uint16(p.GetPort())}
		switch p.GetProtocol() {
		case managerv1.Protocol_PROTOCOL_UNSPECIFIED, managerv1.Protocol_PROTOCOL_TCP:
		case managerv1.Protocol_PROTOCOL_UDP:
			tp.UDP = true
		default:
			return req, fmt.Errorf("--to-pod port %d: protocol %v", p.GetPort(), p.GetProtocol())
		}
		req.ToPod = append(req.ToPod, tp)
	}
	return req, nil
}

// toStatus is the one place where the daemon's errors become gRPC statuses for the CLI. The
// manager's errors keep its code and its message (the reason the user must see, such as pod events);
// the daemon's own get a code and an ErrorDetail, so that the CLI needs no text to tell them apart.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, intercept.ErrLocalPortInUse):
		return withDetail(codes.FailedPrecondition, daemonv1.ErrorCode_ERROR_CODE_LOCAL_PORT_IN_USE, err)
	case errors.Is(err, intercept.ErrToPodPortInUse):
		return withDetail(codes.FailedPrecondition, daemonv1.ErrorCode_ERROR_CODE_TO_POD_PORT_IN_USE, err)
	case errors.Is(err, intercept.ErrNotConnected):
		return withDetail(codes.Unavailable, daemonv1.ErrorCode_ERROR_CODE_NOT_CONNECTED, err)
	case errors.Is(err, intercept.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, intercept.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, intercept.ErrBusy):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, intercept.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		// The innermost status is the manager's; its message, not our wrapping, is the reason.
		st := se.GRPCStatus()
		return status.Error(st.Code(), st.Message())
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func withDetail(code codes.Code, ec daemonv1.ErrorCode, err error) error {
	st, derr := status.New(code, err.Error()).WithDetails(&daemonv1.ErrorDetail{Code: ec})
	if derr != nil {
		return status.Error(code, err.Error())
	}
	return st.Err()
}
