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
	"syscall"
)

// deps are the collaborators every command gets; main wires them once.
type deps struct {
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d := deps{
		stdout: os.Stdout,
		stderr: os.Stderr,
		log:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()})),
	}
	root := newRootCmd(d)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(d.stderr, "teledock:", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		if ctx.Err() != nil {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func logLevel() slog.Level {
	if os.Getenv("TELEDOCK_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// exitError carries a specific exit code to main (for example a `run` container's own code).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
