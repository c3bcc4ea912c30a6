package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"teledock.dev/teledock/agent/agentconfig"
	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// volumesAddr is the one address a Volumes tunnel may ask for: the API is no general way into the
// pod's loopback.
var volumesAddr = agentconfig.VolumesAddr.String()

// Volumes carries one tunnel to the SFTP server of an intercept's agent.
func (d *Daemon) Volumes(stream daemonv1.Daemon_VolumesServer) error {
	target := func(dial *managerv1.Dial) (string, string, error) {
		switch {
		case dial.GetProtocol() != managerv1.Protocol_PROTOCOL_TCP || dial.GetAddress() != volumesAddr:
			return "", "", fmt.Errorf("volumes are served on tcp %s only", volumesAddr)
		case dial.GetInterceptId() == "":
			return "", "", errors.New("no intercept named")
		}
		return "tcp", dial.GetInterceptId(), nil
	}
	dial := func(ctx context.Context, _, name string) (net.Conn, error) {
		return d.icpt.DialVolumes(ctx, name)
	}
	srv, err := tunnel.NewServer(tunnel.ServerConfig{Target: target}, dial, d.log.With("part", "volumes"))
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return srv.Serve(stream)
}
