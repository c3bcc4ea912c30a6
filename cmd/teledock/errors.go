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
)

// hint tells the user what to do about err, or returns "". This is the one place where errors
// become advice; commands only return (wrapped) errors.
func hint(err error) string {
	switch {
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
	case errors.Is(err, errDaemonExited), errors.Is(err, errConnectTimeout), errors.Is(err, errNetwork):
		return "The daemon's last log lines are above; TELEDOCK_DEBUG=1 makes the daemon log more."
	case client.IsErrConnectionFailed(err):
		return "Is Docker running? teledock needs access to the Docker engine."
	case errors.Is(err, exec.ErrNotFound):
		return "`teledock run` needs the docker CLI on PATH."
	}
	return ""
}
