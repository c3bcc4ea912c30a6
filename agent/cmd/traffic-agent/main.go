// Command traffic-agent is the sidecar that teledock injects into intercepted pods. One binary
// plays three parts:
//
//	traffic-agent run [--config SOURCE]       the sidecar: forwards the agent ports to the app, or
//	                                          to the developer while intercepted
//	traffic-agent redirect [--config SOURCE]  the init container: installs the nftables redirect
//	traffic-agent sleep                       the placeholder of a container replaced by --replace
//
// SOURCE is "env:NAME" (default env:TELEDOCK_AGENT_CONFIG) or the path of a JSON or YAML file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"teledock.dev/teledock/agent"
	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/agent/redirect"
	"teledock.dev/teledock/internal/version"
)

const usage = `usage: traffic-agent run|redirect [--config SOURCE] | sleep | version
SOURCE is env:NAME (default ` + agent.DefaultConfigSource + `) or a file path.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := environment{getenv: os.Getenv, readFile: os.ReadFile, installRedirects: redirect.Install}
	os.Exit(run(ctx, os.Args[1:], env, os.Stdout, os.Stderr))
}

// environment is what run takes from the process, so that tests can replace it.
type environment struct {
	getenv           func(string) string
	readFile         func(string) ([]byte, error)
	installRedirects func([]redirect.Redirect) error
}

// errUsage makes run print the usage and exit with 2.
var errUsage = errors.New("usage")

// run executes one subcommand and returns the exit code.
func run(ctx context.Context, args []string, env environment, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel(env.getenv("TELEDOCK_LOG_LEVEL"))}))
	err := dispatch(ctx, log, args, env, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		if err != errUsage && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, err)
		}
		fmt.Fprint(stderr, usage)
		return 2
	}
	log.Error("traffic-agent failed", "err", err)
	return 1
}

func dispatch(ctx context.Context, log *slog.Logger, args []string, env environment, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run", "redirect":
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		fs.SetOutput(io.Discard) // run prints the usage
		source := fs.String("config", agent.DefaultConfigSource, "where the agent config is: env:NAME or a file")
		if err := fs.Parse(args); err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: unexpected %q", errUsage, fs.Args())
		}
		cfg, err := agent.LoadConfig(*source, env.getenv, env.readFile)
		if err != nil {
			return err
		}
		if cmd == "redirect" {
			return agent.InstallRedirects(log, cfg, env.installRedirects)
		}
		mounts, err := agentconfig.ParseMounts(env.getenv(agentconfig.EnvMounts))
		if err != nil {
			return err
		}
		a, err := agent.New(log, cfg, agent.PodFromEnv(env.getenv), agent.Options{
			Version: version.Version, TokenFile: agentconfig.TokenFile, Mounts: mounts,
		})
		if err != nil {
			return err
		}
		return a.Run(ctx)
	case "sleep":
		return agent.Sleep(ctx)
	case "version":
		_, err := fmt.Fprintln(stdout, version.Version)
		return err
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func logLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return slog.LevelInfo
	}
	return l
}
