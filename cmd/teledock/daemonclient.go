package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

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
