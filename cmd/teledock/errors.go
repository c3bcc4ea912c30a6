package main

import (
	"errors"
	"io/fs"
	"os/exec"

	"github.com/docker/docker/client"

	"teledock.dev/teledock/cluster/install"
	"teledock.dev/teledock/daemoncontainer/launcher"
)

// Errors the commands return for conditions that the user can fix; hint says how.
var (
	errNoManager          = errors.New("the traffic-manager is not installed")
	errClusterAuth        = errors.New("the cluster refused the kubeconfig's credentials")
	errNotConnected       = errors.New("not connected")
	errConnectedElsewhere = errors.New("the connection is in use with other settings")
	errDaemonExited       = errors.New("the daemon container exited")
	errConnectTimeout     = errors.New("timed out waiting for the daemon to connect")
	errNetwork            = errors.New("the daemon container's network failed")
	errBadImage           = errors.New("bad image reference")
	errBadAddress         = errors.New("invalid --address")
	errAddressNetwork     = errors.New("the container shares no Docker network with the daemon container")
	errBadTransport       = errors.New("invalid --transport")
	errDirectUnavailable  = errors.New("the direct transport to the traffic-manager cannot be used")
)

// Categories of the daemon's errors (see fromDaemon), and what commands make of them.
var (
	errNotFound           = errors.New("not found")
	errPrecondition       = errors.New("refused by the traffic-manager")
	errAlreadyExists      = errors.New("already exists")
	errDeadline           = errors.New("deadline exceeded")
	errManagerUnreachable = errors.New("the traffic-manager is unreachable")
	errUnsupported        = errors.New("not supported by the daemon or the traffic-manager")
	errInvalidRequest     = errors.New("invalid request")
	errBusy               = errors.New("busy")
	errDaemonAuth         = errors.New("the daemon rejected the connection's token")
	errLocalPortInUse     = errors.New("local port already used by another intercept")
	errToPodPortInUse     = errors.New("--to-pod port in use")

	// errUnknownWorkload and errNoSuchIntercept are NotFound as `intercept` and `leave` see it.
	errUnknownWorkload = errors.New("no such workload")
	errNoSuchIntercept = errors.New("no such intercept")
	// errAgentNotReady is DeadlineExceeded as `intercept` sees it.
	errAgentNotReady = errors.New("the traffic-agent is not ready")
)

// hint tells the user what to do about err, or returns "". This is the one place where errors
// become advice; commands only return (wrapped) errors.
func hint(err error) string {
	switch {
	case errors.Is(err, errComposeMissing), errors.Is(err, errComposeTooOld):
		return "Install the docker compose CLI plugin, 2.30 or newer (2.36 or newer for provider services)."
	case errors.Is(err, errDirectUnavailable):
		return "Install the traffic-manager with `teledock install --direct`, make sure a node's address is reachable from Docker\n" +
			"containers, or connect with --transport auto (falls back to the port-forward)."
	case errors.Is(err, errNoManager):
		return "Install it with `teledock install`, or pass --manager-namespace if it runs in another namespace."
	case errors.Is(err, launcher.ErrNoContext):
		return "Pass --context NAME, or choose a current context with `kubectl config use-context NAME`."
	case errors.Is(err, launcher.ErrContextNotFound):
		return "Pass one of the contexts listed, or point --kubeconfig (or KUBECONFIG) at the right file."
	case errors.Is(err, launcher.ErrInvalidKubeconfig) && errors.Is(err, fs.ErrNotExist):
		return "Check --kubeconfig (or KUBECONFIG)."
	case errors.Is(err, launcher.ErrInvalidKubeconfig):
		return "Check the kubeconfig with `kubectl config view --minify`."
	case errors.Is(err, launcher.ErrExecCredentials):
		return "The daemon container cannot run credential plugins: use a context whose user has a token or a client certificate."
	case errors.Is(err, launcher.ErrImageNotFound):
		return "Load the daemon image into the local Docker engine, or pass --image."
	case errors.Is(err, launcher.ErrNotDaemon):
		return "Another container has the daemon's name: remove it, or pass another --name."
	case errors.Is(err, launcher.ErrInvalidName):
		return "Pass another --name."
	case errors.Is(err, errConnectedElsewhere):
		return "Run `teledock quit` (with --name) first, or pass another --name."
	case errors.Is(err, errClusterAuth):
		return "Check the kubeconfig's credentials and that they may list pods and create pods/portforward in the manager namespace."
	case errors.Is(err, errBadImage):
		return "Give the image as REPOSITORY:TAG."
	case errors.Is(err, install.ErrNotReady):
		return "The reason above comes from the traffic-manager's pods; `kubectl -n <manager-namespace> describe pods` shows more."
	case errors.Is(err, errNotConnected):
		return "Run `teledock connect` first."
	case errors.Is(err, errUnknownWorkload):
		return "`teledock list` shows the workloads that can be intercepted in the connection's namespace; pass -w/--workload when the intercept is not named after its workload."
	case errors.Is(err, errNoSuchIntercept):
		return "`teledock status` lists this connection's intercepts; pass --name for another connection."
	case errors.Is(err, errPrecondition):
		return "When several services select the workload, pass --service; when the port is not found, pass --port LOCAL:SVCPORT with a port of the service; when another client intercepts the workload, `teledock list` shows who."
	case errors.Is(err, errAlreadyExists):
		return "Another client has an intercept of that name: choose another name (and -w/--workload), or ask its owner to leave it (`teledock list` shows the owner)."
	case errors.Is(err, errAgentNotReady):
		return "The traffic-agent did not become ready in time; the reason above comes from the cluster (`kubectl describe pod` shows more). Retry with a longer --timeout once it is fixed."
	case errors.Is(err, errLocalPortInUse):
		return "Pass another --port LOCAL, or `teledock leave` the intercept that uses it."
	case errors.Is(err, errToPodPortInUse):
		return "Something in the daemon's network namespace (a handler container, another intercept's --to-pod) already listens there."
	case errors.Is(err, errManagerUnreachable):
		return "`teledock status` shows the connection's state; the daemon reconnects by itself."
	case errors.Is(err, errUnsupported):
		return "The daemon or the traffic-manager is older than this CLI: reconnect (`teledock quit`, then `teledock connect`) or upgrade the traffic-manager (`teledock install`)."
	case errors.Is(err, errAddressNetwork):
		return "Attach the container to the daemon container's network (`docker network connect NETWORK CONTAINER`), or give --address an IP."
	case errors.Is(err, errDaemonAuth):
		return "The connection file does not match the daemon: `teledock quit` and connect again."
	case errors.Is(err, errDaemonExited), errors.Is(err, errConnectTimeout), errors.Is(err, errNetwork):
		return "The daemon's last log lines are above; TELEDOCK_DEBUG=1 makes the daemon log more."
	case client.IsErrConnectionFailed(err):
		return "Is Docker running? teledock needs access to the Docker engine."
	case errors.Is(err, exec.ErrNotFound):
		return "`teledock run` needs the docker CLI on PATH."
	}
	return ""
}
