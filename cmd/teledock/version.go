package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/internal/version"
)

type versionOptions struct {
	output string
}

// versionInfo is what `teledock version -o json` prints; daemon and manager versions join it
// once those components exist.
type versionInfo struct {
	Client string `json:"client"`
	Go     string `json:"go"`
}

func newVersionCmd(d deps) *cobra.Command {
	var opts versionOptions
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the versions of teledock's parts",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runVersion(d, opts) },
	}
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json")
	return cmd
}

func runVersion(d deps, opts versionOptions) error {
	info := versionInfo{Client: version.Version, Go: runtime.Version()}
	switch opts.output {
	case "json":
		enc := json.NewEncoder(d.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	case "":
		fmt.Fprintf(d.stdout, "Client: %s (%s)\n", info.Client, info.Go)
		return nil
	default:
		return fmt.Errorf("unknown output format %q: use json", opts.output)
	}
}
