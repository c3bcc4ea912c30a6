package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/mounts"
)

// Labels of an `intercept --docker-run` handler container: which intercept it served, so that the
// next run of that intercept can tell a handler left behind by a killed CLI from a live one.
const (
	labelHandlerConnection = "dev.teledock.handler.connection"
	labelHandlerIntercept  = "dev.teledock.handler.intercept-id"
)

// holdIntercept ties the intercept to this process (see HoldIntercept): if teledock is killed, the
// daemon removes it. release ends the hold; call it after leaving the intercept.
func holdIntercept(ctx context.Context, client *daemonClient, name string) (release func(), err error) {
	hctx, cancel := context.WithCancel(ctx)
	stream, err := client.HoldIntercept(hctx, &daemonv1.HoldInterceptRequest{Name: name})
	if err == nil {
		// The first message says the hold is in place; the stream then stays open until release.
		first := make(chan error, 1)
		go func() { _, err := stream.Recv(); first <- err }()
		select {
		case err = <-first:
		case <-time.After(10 * time.Second):
			err = errors.New("no answer within 10s")
		}
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("hold intercept %s: %w", name, fromDaemon(err))
	}
	return cancel, nil
}

// runHandler runs the --docker-run container in the connection's network with the pod's
// environment and volumes; the caller then ends the intercept whatever happened. Ctrl-C or SIGTERM
// stop the container (and so end the intercept); the exit code is the container's.
func runHandler(ctx context.Context, d deps, c *launcher.Container, info *managerv1.InterceptInfo, vols *mountReport, args []string, scanned dockerRunArgs) error {
	envPath, err := handlerEnvFile(d, info.GetEnvironment())
	if err != nil {
		return err
	}
	defer os.Remove(envPath)
	docker, err := d.docker()
	if err != nil {
		return err
	}

	name := scanned.name
	extra := []string{"--env-file", envPath,
		"--label", labelHandlerConnection + "=" + c.Connection,
		"--label", labelHandlerIntercept + "=" + info.GetId()}
	if name == "" {
		name = info.GetName()
		extra = append(extra, "--name", name)
	}
	if err := removeStaleHandler(ctx, d, docker, name, c.Connection, info.GetId()); err != nil {
		return err
	}
	if vols != nil && vols.Error == "" {
		extra = append(extra, mounts.RunFlags(vols.Volumes, vols.Root)...)
	}
	if !scanned.rm {
		// The container is named; a stopped one left behind would block the next run.
		extra = append(extra, "--rm")
	}
	// docker writes the ID of the container it created here: stop stops that one, never another
	// container that happens to have the name (docker run may still be pulling when Ctrl-C comes).
	cidDir, err := os.MkdirTemp("", "teledock-handler-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cidDir)
	cidFile := filepath.Join(cidDir, "cid")
	extra = append(extra, "--cidfile", cidFile)
	stop := func(cmd *exec.Cmd) error {
		// Interrupting docker covers a container not yet created; stopping it through the engine
		// covers one that ignores SIGINT (docker's sig-proxy passes the interrupt on first).
		ierr := cmd.Process.Signal(os.Interrupt)
		id, _ := os.ReadFile(cidFile)
		if len(id) == 0 {
			return ierr
		}
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		timeout := 10
		if err := docker.ContainerStop(sctx, string(id), container.StopOptions{Timeout: &timeout}); err != nil {
			d.log.Debug("stopping the handler container", "container", name, "err", err)
		}
		return ierr
	}
	return dockerRun(ctx, d, c.Name, append(extra, args...), stop)
}

// removeStaleHandler removes a container of that name that was the handler of an earlier intercept
// of this connection, one that has ended (its CLI was killed, so nobody stopped the container). It
// would hold the name and the intercept's port in the daemon's network. Any other container of that
// name is left alone: docker run then says the name is taken.
func removeStaleHandler(ctx context.Context, d deps, docker dockerAPI, name, connection, interceptID string) error {
	ci, err := docker.ContainerInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect container %s: %w", name, err)
	}
	var labels map[string]string
	if ci.Config != nil {
		labels = ci.Config.Labels
	}
	old, ok := labels[labelHandlerIntercept]
	if !ok || labels[labelHandlerConnection] != connection || old == interceptID {
		return nil
	}
	if err := docker.ContainerRemove(ctx, ci.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove the handler container %s of an ended intercept: %w", name, err)
	}
	fmt.Fprintf(d.stderr, "teledock: removed container %s, the handler of an earlier intercept that had ended\n", name)
	return nil
}
