package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/daemoncontainer/daemon"
	"teledock.dev/teledock/daemoncontainer/launcher"
)

// daemonClient is the API of one connection's daemon.
type daemonClient struct {
	daemonv1.DaemonClient
	conn *grpc.ClientConn
}

func (c *daemonClient) Close() error { return c.conn.Close() }

// dialDaemon opens the API of a running daemon container with the connection's token.
func dialDaemon(d deps, c *launcher.Container) (*daemonClient, error) {
	if !c.Running || c.APIAddr == "" {
		return nil, fmt.Errorf("%w: container %s is %s", errNotConnected, c.Name, c.State)
	}
	conn, err := d.connections.Load(c.Connection)
	if err != nil {
		return nil, err
	}
	cc, err := daemon.Dial(c.APIAddr, conn.Token)
	if err != nil {
		return nil, fmt.Errorf("daemon api: %w", err)
	}
	return &daemonClient{DaemonClient: daemonv1.NewDaemonClient(cc), conn: cc}, nil
}

// status asks the daemon for its status, bounded: a wedged daemon must not hang `status`.
func (c *daemonClient) status(ctx context.Context) (*daemonv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &daemonv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("daemon status: %w", err)
	}
	return st, nil
}

// openDaemon finds the running daemon of the named connection and opens its API.
func openDaemon(ctx context.Context, d deps, name string) (*launcher.Container, *daemonClient, error) {
	if err := launcher.ValidateName(name); err != nil {
		return nil, nil, err
	}
	c, err := findDaemon(ctx, d, name)
	if err != nil {
		return nil, nil, err
	}
	client, err := dialDaemon(d, c)
	if err != nil {
		return nil, nil, err
	}
	return c, client, nil
}

// findDaemon returns the running daemon container of a connection, or an error wrapping
// errNotConnected.
func findDaemon(ctx context.Context, d deps, name string) (*launcher.Container, error) {
	l, err := d.launcher()
	if err != nil {
		return nil, err
	}
	c, err := l.Find(ctx, name)
	switch {
	case errors.Is(err, launcher.ErrNotFound):
		return nil, fmt.Errorf("%w (connection %q)", errNotConnected, name)
	case err != nil:
		return nil, err
	case !c.Running:
		return nil, fmt.Errorf("%w: daemon container %s is %s", errNotConnected, c.Name, c.State)
	}
	return c, nil
}

// remoteError is an error the daemon returned (for intercepts, often the traffic-manager's, passed
// on): its message as the daemon sent it, and the category it belongs to.
type remoteError struct {
	kind error
	msg  string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// fromDaemon is the one place where gRPC statuses from the daemon become the CLI's error
// categories; commands refine the category (a NotFound is an unknown workload for `intercept` and
// an unknown intercept for `leave`), and hint() turns it into advice.
func fromDaemon(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	for _, d := range st.Details() {
		if ed, ok := d.(*daemonv1.ErrorDetail); ok {
			switch ed.GetCode() {
			case daemonv1.ErrorCode_ERROR_CODE_LOCAL_PORT_IN_USE:
				return &remoteError{kind: errLocalPortInUse, msg: st.Message()}
			case daemonv1.ErrorCode_ERROR_CODE_TO_POD_PORT_IN_USE:
				return &remoteError{kind: errToPodPortInUse, msg: st.Message()}
			case daemonv1.ErrorCode_ERROR_CODE_NOT_CONNECTED:
				return &remoteError{kind: errManagerUnreachable, msg: st.Message()}
			}
		}
	}
	var kind error
	switch st.Code() {
	case codes.NotFound:
		kind = errNotFound
	case codes.FailedPrecondition:
		kind = errPrecondition
	case codes.AlreadyExists:
		kind = errAlreadyExists
	case codes.DeadlineExceeded:
		kind = errDeadline
	case codes.Unavailable:
		kind = errManagerUnreachable
	case codes.Unimplemented:
		kind = errUnsupported
	case codes.InvalidArgument:
		kind = errInvalidRequest
	case codes.Aborted:
		kind = errBusy
	case codes.Unauthenticated:
		kind = errDaemonAuth
	default:
		return fmt.Errorf("daemon: %w", err)
	}
	return &remoteError{kind: kind, msg: st.Message()}
}
