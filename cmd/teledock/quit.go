package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/daemoncontainer/launcher"
)

type quitOptions struct {
	name   string
	output string
}

// quitJSON is what `quit -o json` prints.
type quitJSON struct {
	SchemaVersion int    `json:"schemaVersion"`
	Connection    string `json:"connection"`
	WasConnected  bool   `json:"was_connected"`
}

func (o quitOptions) done(d deps, wasConnected bool) error {
	if o.output == "json" {
		return writeJSON(d.stdout, quitJSON{schemaVersion, o.name, wasConnected})
	}
	if wasConnected {
		_, err := fmt.Fprintln(d.stdout, "Disconnected")
		return err
	}
	_, err := fmt.Fprintln(d.stdout, "Not connected")
	return err
}

func newQuitCmd(d deps) *cobra.Command {
	var opts quitOptions
	cmd := &cobra.Command{
		Use:   "quit",
		Short: "Disconnect: end the session with the traffic-manager and remove the daemon container",
		Long: "Disconnect: end the session with the traffic-manager and remove the daemon container.\n\n" +
			"Quit is idempotent: quitting a connection that does not exist succeeds.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runQuit(cmd.Context(), d, opts) },
	}
	cmd.Flags().StringVar(&opts.name, "name", "default", "connection name")
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json")
	return cmd
}

func runQuit(ctx context.Context, d deps, opts quitOptions) error {
	if err := checkOutput(opts.output, "json"); err != nil {
		return err
	}
	if err := launcher.ValidateName(opts.name); err != nil {
		return err
	}
	l, err := d.launcher()
	if err != nil {
		return err
	}
	c, err := l.Find(ctx, opts.name)
	switch {
	case errors.Is(err, launcher.ErrNotFound):
		// A connection file without a container is left over from a crash; drop it, and the
		// volumes of its intercepts.
		removeVolumes(d, opts.name, "")
		if err := d.connections.Remove(opts.name); err != nil {
			return err
		}
		return opts.done(d, false)
	case err != nil:
		return err
	}

	if c.Running {
		quitDaemon(ctx, d, c)
	}
	// Removing stops the container with SIGTERM first, which also departs: a daemon that did not
	// answer Quit still ends its session.
	if err := l.Remove(ctx, opts.name); err != nil {
		return err
	}
	removeVolumes(d, opts.name, "")
	if err := d.connections.Remove(opts.name); err != nil {
		return err
	}
	return opts.done(d, true)
}

// quitDaemon asks the daemon to depart. Failure is only logged: the container goes anyway.
func quitDaemon(ctx context.Context, d deps, c *launcher.Container) {
	client, err := dialDaemon(d, c)
	if err != nil {
		d.log.Debug("cannot reach the daemon to quit", "container", c.Name, "err", err)
		return
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := client.Quit(ctx, &daemonv1.QuitRequest{}); err != nil {
		d.log.Debug("quit call failed", "container", c.Name, "err", err)
	}
}
