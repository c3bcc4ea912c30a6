package manager

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/cluster/broker"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
	"teledock.dev/teledock/tunnel"
)

// Sentinels of the intercept RPCs; grpcError gives each its status code.
var (
	errInvalid     = errors.New("invalid request")
	errNoIntercept = errors.New("no such intercept")
	// errAmbiguous: several services or ports fit and the request does not say which.
	errAmbiguous = errors.New("ambiguous")
	// errNoPort: the requested service or port is not among the workload's.
	errNoPort = errors.New("not found")
	// errConflict: the port is intercepted already, or the name is used for another workload.
	errConflict = errors.New("conflict")
	// errNoAgent: the agent did not arrive in time; the message says why.
	errNoAgent = errors.New("traffic-agent did not arrive")
	// errOutdatedAgent: the workload's traffic-agents predate what the intercept needs.
	errOutdatedAgent = errors.New("traffic-agent too old")
)

// grpcError gives an error of the manager's RPCs its gRPC status. It is the one place where
// errors become codes; status errors (sessions) pass through.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	code := codes.Internal
	var apiErr apierrors.APIStatus
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errNoAgent):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, errInvalid), errors.Is(err, broker.ErrProtocol), errors.Is(err, tunnel.ErrProtocol):
		code = codes.InvalidArgument
	case errors.Is(err, workload.ErrNotFound), errors.Is(err, errNoIntercept), errors.Is(err, broker.ErrUnknownConn):
		code = codes.NotFound
	case errors.Is(err, errAmbiguous), errors.Is(err, errNoPort), errors.Is(err, errConflict),
		errors.Is(err, inject.ErrNoTargets), errors.Is(err, inject.ErrPortNotFound),
		errors.Is(err, inject.ErrHostNetwork), errors.Is(err, inject.ErrBadAnnotation),
		errors.Is(err, inject.ErrUnsupportedWorkload), errors.Is(err, errOutdatedAgent):
		code = codes.FailedPrecondition
	case errors.Is(err, broker.ErrWrongAcceptor):
		code = codes.PermissionDenied
	case errors.Is(err, broker.ErrPeer):
		code = codes.Aborted
	case errors.Is(err, inject.ErrSettings), errors.Is(err, agentconfig.ErrInvalid):
		code = codes.Internal // the manager's own configuration or data is wrong
	case errors.As(err, &apiErr):
		// The manager's calls to the API server failed: its rights (Forbidden) are an install
		// problem, the rest is the API server being unavailable.
		if apierrors.IsForbidden(err) {
			code = codes.Internal
		} else {
			code = codes.Unavailable
		}
	}
	return status.Error(code, err.Error())
}
