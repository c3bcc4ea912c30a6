package imageload

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/docker/pkg/stdcopy"
)

// Archive is an image archive as package images makes it.
type Archive interface {
	Ref() string
	Reader() io.ReadCloser
}

// Engine is the part of the Docker API that loads images into the local engine.
type Engine interface {
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
}

// Execer is the part of the Docker API that runs a command in a node container.
type Execer interface {
	ContainerExecCreate(ctx context.Context, container string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
}

// Docker is what Detect and Load use; *client.Client has it.
type Docker interface {
	Lister
	Engine
	Execer
}

var _ Docker = (*client.Client)(nil)

// Event says what Load is about to do; Node is "" for the local engine.
type Event struct {
	Image string
	Node  string
}

// Load brings every archive to where c's nodes find it, calling progress before each image and
// node. Unknown clusters get nothing.
func Load(ctx context.Context, docker Docker, c Cluster, archives []Archive, progress func(Event)) error {
	if progress == nil {
		progress = func(Event) {}
	}
	switch c.Type {
	case DockerDesktop:
		for _, a := range archives {
			progress(Event{Image: a.Ref()})
			if err := LoadEngine(ctx, docker, a); err != nil {
				return err
			}
		}
	case Kind, K3d, Minikube:
		for _, n := range c.Nodes {
			for _, a := range archives {
				progress(Event{Image: a.Ref(), Node: n.Name})
				if err := loadNode(ctx, docker, n, a); err != nil {
					return fmt.Errorf("load %s into node %s: %w", a.Ref(), n.Name, err)
				}
			}
		}
	}
	return nil
}

// LoadEngine loads an archive into the local engine (`docker load`).
func LoadEngine(ctx context.Context, docker Engine, a Archive) error {
	r := a.Reader()
	defer r.Close()
	resp, err := docker.ImageLoad(ctx, r, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("load %s: %w", a.Ref(), err)
	}
	defer resp.Body.Close()
	if err := loadResult(resp.Body); err != nil {
		return fmt.Errorf("load %s: %w", a.Ref(), err)
	}
	return nil
}

// loadResult reads the engine's JSON message stream to its end and returns the error it reports.
func loadResult(body io.Reader) error {
	if err := jsonmessage.DisplayJSONMessagesStream(body, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("the engine's answer: %w", err)
	}
	return nil
}

// loadNode pipes the archive into the node's image store through a docker exec.
func loadNode(ctx context.Context, docker Execer, n Node, a Archive) error {
	cmd := []string{"ctr", "-n", "k8s.io", "images", "import", "-"}
	if n.Loader == LoaderDocker {
		cmd = []string{"docker", "load"}
	}
	return execWithStdin(ctx, docker, n.Container, cmd, a.Reader())
}

// execWithStdin runs cmd in a container with stdin as its standard input, and fails with its
// output when it exits non-zero.
func execWithStdin(ctx context.Context, docker Execer, ctr string, cmd []string, stdin io.ReadCloser) error {
	defer stdin.Close()
	created, err := docker.ContainerExecCreate(ctx, ctr, container.ExecOptions{
		Cmd: cmd, AttachStdin: true, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return fmt.Errorf("exec %s: %w", strings.Join(cmd, " "), err)
	}
	att, err := docker.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return fmt.Errorf("exec %s: %w", strings.Join(cmd, " "), err)
	}
	defer att.Close()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(att.Conn, stdin)
		if cerr := att.CloseWrite(); err == nil {
			err = cerr
		}
		copied <- err
	}()
	var out bytes.Buffer
	_, rerr := stdcopy.StdCopy(&out, &out, att.Reader)
	// The output ends when the command exits; a command that failed early may not have read all
	// of its stdin, so only a read error of ours counts below, not the copy's.
	att.Close()
	cerr := <-copied
	ins, err := docker.ContainerExecInspect(ctx, created.ID)
	// The engine records the exit code as the stream ends; give it a moment.
	for i := 0; err == nil && ins.Running && i < 40; i++ {
		time.Sleep(50 * time.Millisecond)
		ins, err = docker.ContainerExecInspect(ctx, created.ID)
	}
	if err != nil {
		return fmt.Errorf("exec %s: %w", strings.Join(cmd, " "), err)
	}
	if ins.ExitCode != 0 {
		return fmt.Errorf("%s exited with %d: %s", strings.Join(cmd, " "), ins.ExitCode, strings.TrimSpace(out.String()))
	}
	if rerr != nil {
		return fmt.Errorf("exec %s: output: %w", strings.Join(cmd, " "), rerr)
	}
	if cerr != nil {
		return fmt.Errorf("exec %s: stdin: %w", strings.Join(cmd, " "), cerr)
	}
	return nil
}
