package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/daemoncontainer/launcher"
)

type contextsOptions struct {
	kubeconfig string
	output     string
}

func newContextsCmd(d deps) *cobra.Command {
	var opts contextsOptions
	cmd := &cobra.Command{
		Use:   "contexts",
		Short: "List the kubeconfig's contexts (what connect --context takes)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := checkOutput(opts.output, "json"); err != nil {
				return err
			}
			contexts, err := launcher.Contexts(opts.kubeconfig)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				return writeJSON(d.stdout, struct {
					SchemaVersion int                    `json:"schemaVersion"`
					Contexts      []launcher.ContextInfo `json:"contexts"`
				}{schemaVersion, contexts})
			}
			var b strings.Builder
			for _, c := range contexts {
				mark := " "
				if c.Current {
					mark = "*"
				}
				fmt.Fprintf(&b, "%s %s\t%s\t%s\n", mark, c.Name, c.Server, c.Namespace)
			}
			_, err = fmt.Fprint(d.stdout, b.String())
			return err
		},
	}
	cmd.Flags().StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json")
	return cmd
}
