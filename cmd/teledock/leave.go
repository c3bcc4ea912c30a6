package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
)

type leaveOptions struct {
	intercept  string
	connection string
	output     string
}

func newLeaveCmd(d deps) *cobra.Command {
	var opts leaveOptions
	cmd := &cobra.Command{
		Use:   "leave NAME",
		Short: "End an intercept: the workload gets its traffic back",
		Long: "End an intercept of this connection: the workload gets its traffic back, without a restart,\n" +
			"and the intercept's volumes are removed.\n\n" +
			"Quitting the connection ends all its intercepts.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.intercept = args[0]
			return runLeave(cmd.Context(), d, opts)
		},
	}
	cmd.Flags().StringVar(&opts.connection, "name", "default", "connection name")
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json")
	return cmd
}

func runLeave(ctx context.Context, d deps, opts leaveOptions) error {
	if err := checkOutput(opts.output, "json"); err != nil {
		return err
	}
	_, client, err := openDaemon(ctx, d, opts.connection)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = client.RemoveIntercept(ctx, &daemonv1.RemoveInterceptRequest{Name: opts.intercept})
	// The volumes go even when the intercept is already gone (its agent or session went first).
	removeVolumes(d, opts.connection, opts.intercept)
	if err != nil {
		err = fromDaemon(err)
		if errors.Is(err, errNotFound) {
			return fmt.Errorf("leave: %w %q in connection %s", errNoSuchIntercept, opts.intercept, opts.connection)
		}
		return fmt.Errorf("leave %s: %w", opts.intercept, err)
	}
	if opts.output == "json" {
		return writeJSON(d.stdout, struct {
			SchemaVersion int    `json:"schemaVersion"`
			Left          string `json:"left"`
		}{schemaVersion, opts.intercept})
	}
	fmt.Fprintf(d.stdout, "Left intercept %s\n", opts.intercept)
	return nil
}
