// Command teledock runs one service of a Kubernetes application in a local Docker container as if it
// ran in the cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"sync"
	"syscall"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/spf13/cobra"

	"teledock.dev/teledock/cluster/install"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/images"
	"teledock.dev/teledock/internal/mounts"
)

// deps are the collaborators every command gets; main wires them once.
type deps struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	getenv func(string) string
	// hostname is the user's host name, shown in the traffic-manager's session list.
	hostname string
	// username is the user's login name; with hostname, the owner of the user's intercepts.
	username string
	// launcher manages daemon containers. It is created on first use: commands such as `version`
	// need no Docker at all.
	launcher func() (*launcher.Launcher, error)
	// docker reaches the Docker engine for what the launcher does not do (handler containers,
	// --address CONTAINER); created on first use, like the launcher, and the same client.
	docker func() (dockerAPI, error)
	// volumes reaches the engine for the intercepts' volumes (the same client).
	volumes func() (mounts.Docker, error)
	// connections holds the per-connection token files.
	connections launcher.Store
	// images reaches the engine to load teledock's own images into it and into local clusters'
	// nodes (the same client); carried gives those images from the CLI's embedded binaries.
	images  func() (imageEngine, error)
	carried carriedFunc
	// describe tells the context, server and nodes of the cluster install targets.
	describe func(context.Context, install.Config) (install.Cluster, error)
}

func main() {
	// SIGHUP too: a closed terminal must end an --docker-run intercept as Ctrl-C does (leave, stop the
	// handler), not kill teledock before its cleanup runs.
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) { // under nohup, a closed terminal must not end anything
		sigs = append(sigs, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), sigs...)
	defer stop()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	hostname, _ := os.Hostname()
	// os.UserConfigDir honours XDG_CONFIG_HOME and falls back to ~/.config; without either, the
	// store reports the problem when a command needs it.
	configDir, _ := os.UserConfigDir()
	dockerClient := sync.OnceValues(newDockerClient)
	d := deps{
		stdin:    os.Stdin,
		stdout:   os.Stdout,
		stderr:   os.Stderr,
		log:      log,
		getenv:   os.Getenv,
		hostname: hostname,
		username: username(),
		launcher: sync.OnceValues(func() (*launcher.Launcher, error) {
			c, err := dockerClient()
			if err != nil {
				return nil, err
			}
			return launcher.New(c, log)
		}),
		docker: func() (dockerAPI, error) {
			c, err := dockerClient()
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		volumes: func() (mounts.Docker, error) {
			c, err := dockerClient()
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		connections: launcher.NewStore(configDir),
		images: func() (imageEngine, error) {
			c, err := dockerClient()
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		carried:  images.Carried,
		describe: install.Describe,
	}
	root := newRootCmd(d)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			// The code is the `run` container's own; its output already said what happened.
			os.Exit(ee.code)
		}
		reportError(d, cmd, err)
		if ctx.Err() != nil {
			os.Exit(exitInterrupt)
		}
		os.Exit(kindOf(err).exit)
	}
}

// reportError is the CLI's one error boundary: the error and its hint on stderr, or, for a command
// run with -o json, a JSON error document on stdout (docs/json.md).
func reportError(d deps, cmd *cobra.Command, err error) {
	if cmd != nil {
		if f := cmd.Flags().Lookup("output"); f != nil && f.Value.String() == "json" {
			if werr := writeJSON(d.stdout, newErrorJSON(err)); werr == nil {
				return
			}
		}
	}
	fmt.Fprintln(d.stderr, "teledock:", err)
	if h := hint(err); h != "" {
		fmt.Fprintln(d.stderr, h)
	}
}

func newDockerClient() (*client.Client, error) {
	// Negotiation matters: the engine may be Docker 20.10, older than this SDK's default API.
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// dockerAPI is the part of the Docker SDK's client that commands use directly.
type dockerAPI interface {
	ContainerInspect(ctx context.Context, container string) (container.InspectResponse, error)
	ContainerStop(ctx context.Context, container string, options container.StopOptions) error
	ContainerRemove(ctx context.Context, container string, options container.RemoveOptions) error
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkConnect(ctx context.Context, network, container string, config *network.EndpointSettings) error
}

var _ dockerAPI = (*client.Client)(nil)

func logLevel() slog.Level {
	if os.Getenv("TELEDOCK_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// exitError carries a specific exit code to main (for example a `run` container's own code).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// username is the login name of the user running teledock, "" when it cannot be told.
func username() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}
