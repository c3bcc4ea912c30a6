package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

type envOptions struct {
	intercept  string
	connection string
	output     string
}

func newEnvCmd(d deps) *cobra.Command {
	var opts envOptions
	cmd := &cobra.Command{
		Use:   "env NAME",
		Short: "Print the environment an intercept imported from its pod (docker --env-file format, or -o json)",
		Long: "Print the environment that intercept NAME imported from its pod: values and Secrets included,\n" +
			"so mind where the output goes. Without -o json it is in docker's --env-file format; variables\n" +
			"that format cannot hold (newlines in values) are only in -o json.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.intercept = args[0]
			return runEnv(cmd.Context(), d, opts)
		},
	}
	cmd.Flags().StringVar(&opts.connection, "name", "default", "connection name")
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json")
	return cmd
}

func runEnv(ctx context.Context, d deps, opts envOptions) error {
	if err := checkOutput(opts.output, "json"); err != nil {
		return err
	}
	_, client, err := openDaemon(ctx, d, opts.connection)
	if err != nil {
		return err
	}
	defer client.Close()
	info, err := findIntercept(ctx, client, opts.intercept)
	if err != nil {
		return fmt.Errorf("env: %w in connection %s", err, opts.connection)
	}
	env := info.GetEnvironment()
	if env == nil {
		env = map[string]string{}
	}
	if opts.output == "json" {
		return writeJSON(d.stdout, struct {
			SchemaVersion int               `json:"schemaVersion"`
			Intercept     string            `json:"intercept"`
			Environment   map[string]string `json:"environment"`
		}{schemaVersion, opts.intercept, env})
	}
	data, _ := envFileLines(env)
	_, err = d.stdout.Write(data)
	return err
}

// findIntercept returns the connection's intercept of that name, as the daemon keeps it (with the
// pod's environment), or an error wrapping errNoSuchIntercept.
func findIntercept(ctx context.Context, client *daemonClient, name string) (*managerv1.InterceptInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := client.ListIntercepts(ctx, &daemonv1.ListInterceptsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list intercepts: %w", fromDaemon(err))
	}
	for _, ic := range list.GetIntercepts() {
		if ic.GetName() == name {
			return ic, nil
		}
	}
	return nil, fmt.Errorf("%w %q", errNoSuchIntercept, name)
}
