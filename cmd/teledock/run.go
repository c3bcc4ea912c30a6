package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/daemoncontainer/launcher"
)

type runOptions struct {
	connection string
	intercept  string   // --intercept NAME: the intercept whose env and volumes the container gets
	noPodEnv   bool     // --no-pod-env: with --intercept, the volumes only
	dockerArgs []string // everything after `run`, for `docker run`
	help       bool
}

func newRunCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run [--connection NAME] [--intercept NAME [--no-pod-env]] [docker run flags] IMAGE [COMMAND] [ARG...]",
		Short: "Run a container in the connection's network: it resolves and reaches the cluster",
		Long: "Run a container with `docker run`, joined to the daemon container's network namespace:\n" +
			"it resolves cluster names and reaches pods and services.\n\n" +
			"Flags are docker run's (-d, --rm, -e, -v, --name, -it, ...). Network flags (--network, -p,\n" +
			"--dns, --hostname, ...) are refused: the network is the daemon's. --connection NAME (first,\n" +
			"or TELEDOCK_CONNECTION) picks the connection; the default is \"default\". --intercept NAME\n" +
			"gives the container that intercept's environment and volumes (at the pod's paths), as\n" +
			"intercept --docker-run does (--no-pod-env: the volumes only).\n" +
			"The exit code is the container's.",
		// docker run's flags are passed through untouched; they are parsed only to find the image
		// and to refuse the network flags.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := parseRunArgs(args, d.getenv("TELEDOCK_CONNECTION"))
			if err != nil {
				return err
			}
			if opts.help {
				return cmd.Help()
			}
			return runRun(cmd.Context(), d, opts)
		},
	}
	return cmd
}

func runRun(ctx context.Context, d deps, opts runOptions) error {
	c, err := findDaemon(ctx, d, opts.connection)
	if err != nil {
		return err
	}
	// On Ctrl-C the terminal already signals docker (same process group); a SIGTERM to teledock is
	// passed on as an interrupt, which docker forwards to the container. Killing docker would leave
	// the container running.
	interrupt := func(cmd *exec.Cmd) error { return cmd.Process.Signal(os.Interrupt) }
	args := opts.dockerArgs
	if opts.intercept != "" {
		flags, cleanup, err := interceptRunFlags(ctx, d, c, opts.intercept, !opts.noPodEnv)
		if err != nil {
			return err
		}
		defer cleanup()
		args = append(flags, args...)
	}
	return dockerRun(ctx, d, c.Name, args, interrupt)
}

// dockerRun runs `docker run --network container:DAEMON ARGS...` with the terminal's streams and
// returns an exitError carrying the container's exit code. When ctx ends, cancel is called to stop
// the container; docker is killed only if it has not exited 15s later.
func dockerRun(ctx context.Context, d deps, daemonContainer string, args []string, cancel func(*exec.Cmd) error) error {
	return dockerCLI(ctx, d, append([]string{"run", "--network", "container:" + daemonContainer}, args...), cancel)
}

// dockerCLI runs the docker CLI with the terminal's streams and returns an exitError carrying its
// exit code. When ctx ends, cancel is called; docker is killed only if it has not exited 15s later.
func dockerCLI(ctx context.Context, d deps, args []string, cancel func(*exec.Cmd) error) error {
	docker, err := exec.LookPath("docker")
	if err != nil {
		return fmt.Errorf("docker CLI: %w", err)
	}
	d.log.Debug("running", "docker", docker, "args", logArgs(args))
	cmd := exec.CommandContext(ctx, docker, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = d.stdin, d.stdout, d.stderr
	cmd.SysProcAttr = childAttr()
	cmd.Cancel = func() error { return cancel(cmd) }
	cmd.WaitDelay = 15 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError{code: exitCode(ee)}
	}
	if err != nil {
		return fmt.Errorf("docker %s: %w", args[0], err)
	}
	return nil
}

// logArgs is docker's args for the debug log: a -e/--env value is a secret as often as not, so
// only its name shows. (A container command's own -e after the image is shortened the same way,
// in the log only.)
func logArgs(args []string) []string {
	out := slices.Clone(args)
	for i := 0; i < len(out); i++ {
		switch a := out[i]; {
		case (a == "-e" || a == "--env") && i+1 < len(out):
			i++
			out[i] = envName(out[i])
		case strings.HasPrefix(a, "--env="):
			out[i] = "--env=" + envName(strings.TrimPrefix(a, "--env="))
		case strings.HasPrefix(a, "-e") && !strings.HasPrefix(a, "--") && len(a) > 2:
			out[i] = "-e" + envName(a[2:])
		}
	}
	return out
}

// envName is NAME=VALUE with the value hidden.
func envName(kv string) string {
	if k, _, ok := strings.Cut(kv, "="); ok {
		return k + "=<hidden>"
	}
	return kv
}

func exitCode(ee *exec.ExitError) int {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// refusedRunFlags are docker run flags that set up the container's own network, which the
// container does not have: it shares the daemon's. Docker rejects most of them with
// --network container:..., but with a message that does not say why.
var refusedRunFlags = map[string]string{
	"network":       "the container joins the daemon's network; that is how it reaches the cluster",
	"net":           "the container joins the daemon's network; that is how it reaches the cluster",
	"publish":       "a container in another container's network cannot publish ports",
	"publish-all":   "a container in another container's network cannot publish ports",
	"expose":        "a container in another container's network cannot expose ports",
	"dns":           "DNS is the daemon's, which resolves cluster names",
	"dns-search":    "DNS is the daemon's, which resolves cluster names",
	"dns-option":    "DNS is the daemon's, which resolves cluster names",
	"dns-opt":       "DNS is the daemon's, which resolves cluster names",
	"hostname":      "the hostname is the daemon container's",
	"add-host":      "/etc/hosts is the daemon container's",
	"mac-address":   "network settings are the daemon container's",
	"ip":            "network settings are the daemon container's",
	"ip6":           "network settings are the daemon container's",
	"link":          "network settings are the daemon container's",
	"network-alias": "network settings are the daemon container's",
	"net-alias":     "network settings are the daemon container's",
}

// shortRunFlags maps docker run's one-letter flags to their long names.
var shortRunFlags = map[byte]string{
	'a': "attach", 'c': "cpu-shares", 'd': "detach", 'e': "env", 'h': "hostname", 'i': "interactive",
	'l': "label", 'm': "memory", 'p': "publish", 'P': "publish-all", 'q': "quiet", 't': "tty",
	'u': "user", 'v': "volume", 'w': "workdir",
}

// boolRunFlags are docker run's flags that take no value; all its other flags take one.
var boolRunFlags = map[string]bool{
	"detach": true, "interactive": true, "tty": true, "rm": true, "init": true, "privileged": true,
	"read-only": true, "sig-proxy": true, "no-healthcheck": true, "oom-kill-disable": true,
	"publish-all": true, "quiet": true, "disable-content-trust": true, "help": true, "use-api-socket": true,
}

// parseRunArgs splits teledock's own leading --connection flag from docker run's arguments and
// checks the docker flags up to the image: what follows the image is the container's command,
// whose flags (say `nc -p 80`) are not docker's.
func parseRunArgs(args []string, envConnection string) (runOptions, error) {
	opts := runOptions{connection: envConnection}
	if opts.connection == "" {
		opts.connection = "default"
	}
	// teledock's own flags come first, before docker run's.
	for len(args) > 0 {
		var flag, value string
		switch a := args[0]; {
		case a == "--no-pod-env":
			opts.noPodEnv, args = true, args[1:]
			continue
		case a == "--connection" || a == "--intercept":
			if len(args) < 2 {
				return opts, fmt.Errorf("%s needs a%s name", a, map[bool]string{true: " connection", false: "n intercept"}[a == "--connection"])
			}
			flag, value, args = a, args[1], args[2:]
		case strings.HasPrefix(a, "--connection=") || strings.HasPrefix(a, "--intercept="):
			flag, value, _ = strings.Cut(a, "=")
			args = args[1:]
		}
		if flag == "" {
			break
		}
		if flag == "--connection" {
			opts.connection = value
		} else if opts.intercept = value; value == "" {
			return opts, errors.New("--intercept needs an intercept name")
		}
	}
	if err := launcher.ValidateName(opts.connection); err != nil {
		return opts, err
	}
	if len(args) == 1 && (args[0] == "--help" || args[0] == "-h") {
		opts.help = true
		return opts, nil
	}

	scanned, err := scanDockerRunArgs(args, "teledock run")
	if err != nil {
		return opts, err
	}
	if scanned.image < 0 {
		return opts, errors.New("no image: usage is teledock run [docker run flags] IMAGE [COMMAND] [ARG...]")
	}
	opts.dockerArgs = args
	return opts, nil
}

// dockerRunArgs is what scanDockerRunArgs found in docker run's arguments.
type dockerRunArgs struct {
	image  int    // index of the image; -1 when there is none
	name   string // the value of --name, "" when not given
	rm     bool   // --rm was given
	detach bool   // -d/--detach was given
}

// scanDockerRunArgs checks docker run's flags up to the image, refusing the network flags (see
// refusedRunFlags; use names the command in the message): what follows the image is the
// container's command, whose flags (say `nc -p 80`) are not docker's.
func scanDockerRunArgs(args []string, use string) (dockerRunArgs, error) {
	found := dockerRunArgs{image: -1}
scan:
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				found.image = i + 1
			}
			break scan
		case strings.HasPrefix(a, "--"):
			name, value, hasValue := strings.Cut(a[2:], "=")
			if err := checkRunFlag("--"+name, name, use); err != nil {
				return found, err
			}
			if !hasValue && !boolRunFlags[name] {
				i++ // the value is the next argument
				if i < len(args) {
					value = args[i]
				}
			}
			switch name {
			case "name":
				found.name = value
			case "rm":
				found.rm = !hasValue || value == "true"
			case "detach":
				found.detach = !hasValue || value == "true"
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// A group of one-letter flags (-it, -dp 80:80, -eFOO=1): the first that takes a value
			// takes the rest of the group, or else the next argument.
			for j := 1; j < len(a); j++ {
				name, known := shortRunFlags[a[j]]
				if err := checkRunFlag("-"+string(a[j]), name, use); err != nil {
					return found, err
				}
				if name == "detach" {
					found.detach = true
				}
				if known && !boolRunFlags[name] {
					if j == len(a)-1 {
						i++
					}
					break
				}
			}
		default:
			found.image = i
			break scan
		}
	}
	return found, nil
}

func checkRunFlag(flag, name, use string) error {
	if why, refused := refusedRunFlags[name]; refused {
		return fmt.Errorf("%s cannot be used with %s: %s", flag, use, why)
	}
	return nil
}
