//go:build !netstack

package main

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"

	"teledock.dev/teledock/daemoncontainer/session"
)

// This file stands in for network.go until the netstack, dns and tunnel packages are merged.

func startNetwork(context.Context, *session.Session, networkConfig, *slog.Logger) (network, error) {
	return nil, errors.New("built without netstack")
}

func managerDialOptions() []grpc.DialOption { return nil }
