package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"

	"github.com/docker/docker/client"
	"github.com/spf13/cobra"

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
	errBadFilter          = errors.New("invalid HTTP filter")
	errAddressNetwork     = errors.New("the container shares no Docker network with the daemon container")
	errBadTransport       = errors.New("invalid --transport")
	errDirectUnavailable  = errors.New("the direct transport to the traffic-manager cannot be used")
	errImageLoad          = errors.New("loading teledock's images failed")
	errImagePush          = errors.New("pushing teledock's images failed")
	errNoImageRoute       = errors.New("teledock cannot bring its images to this cluster")
	// errUsage marks cobra's own flag and argument errors (see markUsageErrors).
	errUsage = errors.New("usage")
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

// errorKind is one kind of error the user can do something about: a stable code for programs
// (-o json), and the hint that says what to do.
type errorKind struct {
	code string
	exit int // the process's exit code (docs/json.md lists them)
	is   func(error) bool
	hint string
}

// Exit codes by kind of error, for scripts that branch on them without parsing output. `teledock
// run` exits with its container's code instead, as `docker run` does.
const (
	exitOther      = 1   // anything else
	exitUsage      = 2   // bad flags or arguments
	exitCluster    = 3   // kubeconfig, context, the cluster's credentials
	exitManager    = 4   // no, an unready, unreachable or too old traffic-manager
	exitNotFound   = 5   // no such workload or intercept
	exitConflict   = 6   // the intercept conflicts with another, or its port is taken
	exitDocker     = 7   // Docker, its CLI or compose, or an image, is missing
	exitTimeout    = 8   // something did not become ready in time
	exitConnection = 9   // not connected, or the connection's daemon failed or does not match
	exitInterrupt  = 130 // Ctrl-C
)

// reason is the kind in words, from its code.
func (k errorKind) reason() string {
	return strings.ToLower(strings.ReplaceAll(k.code, "_", " "))
}

// errorKinds are checked in order; the first that matches an error is its kind. This is the one
// place where errors become advice; commands only return (wrapped) errors.
var errorKinds = []errorKind{
	{"USAGE", exitUsage, func(err error) bool {
		return errors.Is(err, errUsage) || errors.Is(err, errBadTransport) || errors.Is(err, errBadAddress) || errors.Is(err, errBadFilter) ||
			errors.Is(err, errInvalidRequest) || strings.HasPrefix(err.Error(), "unknown command ")
	}, "`teledock COMMAND --help` shows the command's flags and arguments."},
	{"COMPOSE_MISSING", exitDocker, func(err error) bool { return errors.Is(err, errComposeMissing) || errors.Is(err, errComposeTooOld) }, "Install the docker compose CLI plugin, 2.30 or newer (2.36 or newer for provider services)."},
	{"DIRECT_UNAVAILABLE", exitManager, func(err error) bool { return errors.Is(err, errDirectUnavailable) }, "Install the traffic-manager with `teledock install --direct`, make sure a node's address is reachable from Docker\n" +
		"containers, or connect with --transport auto (falls back to the port-forward)."},
	{"NO_MANAGER", exitManager, func(err error) bool { return errors.Is(err, errNoManager) }, "Install it with `teledock install`, or pass --manager-namespace if it runs in another namespace."},
	{"NO_CONTEXT", exitCluster, func(err error) bool { return errors.Is(err, launcher.ErrNoContext) }, "Pass --context NAME, or choose a current context with `kubectl config use-context NAME`."},
	{"CONTEXT_NOT_FOUND", exitCluster, func(err error) bool { return errors.Is(err, launcher.ErrContextNotFound) }, "Pass one of the contexts listed, or point --kubeconfig (or KUBECONFIG) at the right file."},
	{"KUBECONFIG_NOT_FOUND", exitCluster, func(err error) bool {
		return errors.Is(err, launcher.ErrInvalidKubeconfig) && errors.Is(err, fs.ErrNotExist)
	}, "Check --kubeconfig (or KUBECONFIG)."},
	{"INVALID_KUBECONFIG", exitCluster, func(err error) bool { return errors.Is(err, launcher.ErrInvalidKubeconfig) }, "Check the kubeconfig with `kubectl config view --minify`."},
	{"EXEC_CREDENTIALS", exitCluster, func(err error) bool { return errors.Is(err, launcher.ErrExecCredentials) }, "The daemon container cannot run credential plugins: use a context whose user has a token or a client certificate."},
	{"IMAGE_NOT_FOUND", exitDocker, func(err error) bool { return errors.Is(err, launcher.ErrImageNotFound) }, "Build teledock with `make build` (it then carries its images and loads them), load the daemon image into the\n" +
		"local Docker engine (`make images`), or pass --image."},
	{"IMAGE_LOAD_FAILED", exitDocker, func(err error) bool { return errors.Is(err, errImageLoad) }, "Load the images yourself (`docker load`, `kind load docker-image`, `k3d image import`, `minikube image load`)\n" +
		"and pass --image (and --agent-image to install) so that teledock uses them as given."},
	{"IMAGE_PUSH_FAILED", exitDocker, func(err error) bool { return errors.Is(err, errImagePush) }, "Check that the registry is reachable from the Docker engine and that `docker login REGISTRY` has credentials that may push."},
	{"NO_IMAGE_ROUTE", exitUsage, func(err error) bool { return errors.Is(err, errNoImageRoute) }, "Pass --registry REGISTRY (teledock pushes its images there with your Docker credentials; the cluster must pull from it),\n" +
		"or --image and --agent-image naming images the cluster's nodes have or can pull."},
	{"NAME_TAKEN", exitConnection, func(err error) bool { return errors.Is(err, launcher.ErrNotDaemon) }, "Another container has the daemon's name: remove it, or pass another --name."},
	{"INVALID_NAME", exitUsage, func(err error) bool { return errors.Is(err, launcher.ErrInvalidName) }, "Pass another --name."},
	{"CONNECTED_ELSEWHERE", exitConnection, func(err error) bool { return errors.Is(err, errConnectedElsewhere) }, "Run `teledock quit` (with --name) first, or pass another --name."},
	{"CLUSTER_AUTH", exitCluster, func(err error) bool { return errors.Is(err, errClusterAuth) }, "Check the kubeconfig's credentials and that they may list pods and create pods/portforward in the manager namespace."},
	{"BAD_IMAGE", exitUsage, func(err error) bool { return errors.Is(err, errBadImage) }, "Give the image as REPOSITORY:TAG."},
	{"MANAGER_NOT_READY", exitManager, func(err error) bool { return errors.Is(err, install.ErrNotReady) }, "The reason above comes from the traffic-manager's pods; `kubectl -n <manager-namespace> describe pods` shows more."},
	{"NOT_CONNECTED", exitConnection, func(err error) bool { return errors.Is(err, errNotConnected) }, "Run `teledock connect` first."},
	{"NO_SUCH_WORKLOAD", exitNotFound, func(err error) bool { return errors.Is(err, errUnknownWorkload) }, "`teledock list` shows the workloads that can be intercepted in the connection's namespace; pass -w/--workload when the intercept is not named after its workload."},
	{"NO_SUCH_INTERCEPT", exitNotFound, func(err error) bool { return errors.Is(err, errNoSuchIntercept) }, "`teledock status` lists this connection's intercepts; pass --name for another connection."},
	{"REFUSED", exitConflict, func(err error) bool { return errors.Is(err, errPrecondition) }, "When several services select the workload, pass --service; when the port is not found, pass --port LOCAL:SVCPORT with a port of the service; when another client intercepts the workload, `teledock list` shows who."},
	{"ALREADY_EXISTS", exitConflict, func(err error) bool { return errors.Is(err, errAlreadyExists) }, "Another client has an intercept of that name: choose another name (and -w/--workload), or ask its owner to leave it (`teledock list` shows the owner)."},
	{"AGENT_NOT_READY", exitTimeout, func(err error) bool { return errors.Is(err, errAgentNotReady) }, "The traffic-agent did not become ready in time; the reason above comes from the cluster (`kubectl describe pod` shows more). Retry with a longer --timeout once it is fixed."},
	{"LOCAL_PORT_IN_USE", exitConflict, func(err error) bool { return errors.Is(err, errLocalPortInUse) }, "Pass another --port LOCAL, or `teledock leave` the intercept that uses it."},
	{"TO_POD_PORT_IN_USE", exitConflict, func(err error) bool { return errors.Is(err, errToPodPortInUse) }, "Something in the daemon's network namespace (a handler container, another intercept's --to-pod) already listens there."},
	{"MANAGER_UNREACHABLE", exitManager, func(err error) bool { return errors.Is(err, errManagerUnreachable) }, "`teledock status` shows the connection's state; the daemon reconnects by itself."},
	{"UNSUPPORTED", exitManager, func(err error) bool { return errors.Is(err, errUnsupported) }, "The daemon or the traffic-manager is older than this CLI: reconnect (`teledock quit`, then `teledock connect`) or upgrade the traffic-manager (`teledock install`)."},
	{"ADDRESS_NETWORK", exitUsage, func(err error) bool { return errors.Is(err, errAddressNetwork) }, "Attach the container to the daemon container's network (`docker network connect NETWORK CONTAINER`), or give --address an IP."},
	{"DAEMON_AUTH", exitConnection, func(err error) bool { return errors.Is(err, errDaemonAuth) }, "The connection file does not match the daemon: `teledock quit` and connect again."},
	{"DAEMON_FAILED", exitConnection, func(err error) bool {
		return errors.Is(err, errDaemonExited) || errors.Is(err, errConnectTimeout) || errors.Is(err, errNetwork)
	}, "The daemon's last log lines are above; TELEDOCK_DEBUG=1 makes the daemon log more."},
	{"DOCKER_UNAVAILABLE", exitDocker, func(err error) bool { return client.IsErrConnectionFailed(err) }, "Is Docker running? teledock needs access to the Docker engine."},
	{"DOCKER_CLI_MISSING", exitDocker, func(err error) bool { return errors.Is(err, exec.ErrNotFound) }, "`teledock run` needs the docker CLI on PATH."},
}

// otherError is the kind of an error no errorKind matches.
var otherError = errorKind{code: "ERROR", exit: exitOther}

func kindOf(err error) errorKind {
	for _, k := range errorKinds {
		if k.is(err) {
			return k
		}
	}
	return otherError
}

// hint tells the user what to do about err, or returns "".
func hint(err error) string { return kindOf(err).hint }

// markUsageErrors makes cobra's flag and argument errors, of c and every command under it,
// errUsage, so that they exit with exitUsage and say how to get help.
func markUsageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", errUsage, err) })
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return fmt.Errorf("%w: %w", errUsage, err)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}
