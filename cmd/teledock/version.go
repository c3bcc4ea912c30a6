package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/internal/version"
)

type versionOptions struct {
	output string
	name   string
}

// versionInfo is what `teledock version -o json` prints. Daemon and manager are empty when no
// connection runs (they are only known through the daemon).
type versionInfo struct {
	SchemaVersion int    `json:"schemaVersion"`
	Client        string `json:"client"`
	Go            string `json:"go"`
	Daemon        string `json:"daemon,omitempty"`
	Manager       string `json:"traffic_manager,omitempty"`
}

func newVersionCmd(d deps) *cobra.Command {
	var opts versionOptions
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the versions of the client, the daemon and the traffic-manager",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runVersion(cmd.Context(), d, opts) },
	}
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json")
	cmd.Flags().StringVar(&opts.name, "name", "default", "connection name")
	return cmd
}

func runVersion(ctx context.Context, d deps, opts versionOptions) error {
	if opts.output != "" && opts.output != "json" {
		return fmt.Errorf("unknown output format %q: use json", opts.output)
	}
	info := versionInfo{Client: version.Version, Go: runtime.Version()}
	// The daemon's and manager's versions are best effort: version must work without Docker or a
	// connection.
	if c, err := findDaemon(ctx, d, opts.name); err == nil {
		if dc, err := dialDaemon(d, c); err == nil {
			if st, err := dc.status(ctx); err == nil {
				info.Daemon = st.GetVersion()
				info.Manager = st.GetManager().GetVersion()
			}
			dc.Close()
		}
	}
	if opts.output == "json" {
		info.SchemaVersion = schemaVersion
		return writeJSON(d.stdout, info)
	}
	fmt.Fprintf(d.stdout, "Client         : %s (%s)\n", info.Client, info.Go)
	fmt.Fprintf(d.stdout, "Daemon         : %s\n", orNotConnected(info.Daemon))
	fmt.Fprintf(d.stdout, "Traffic Manager: %s\n", orNotConnected(info.Manager))
	return nil
}

func orNotConnected(v string) string {
	if v == "" {
		return "not connected"
	}
	return v
}
