package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/cluster/install"
)

type uninstallOptions struct {
	kubeconfig       string
	context          string
	managerNamespace string
	timeout          time.Duration
	agents           bool
}

func newUninstallCmd(d deps) *cobra.Command {
	var opts uninstallOptions
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the traffic-manager and everything it installed from the cluster",
		Long: "Remove the traffic-manager release, and its namespace when `teledock install` created it.\n\n" +
			"Uninstall is idempotent: uninstalling what is not installed succeeds.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runUninstall(cmd.Context(), d, opts) },
	}
	f := cmd.Flags()
	f.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&opts.context, "context", "", "kubeconfig context (default: the current one)")
	f.StringVar(&opts.managerNamespace, "manager-namespace", "teledock", "namespace of the traffic-manager")
	f.DurationVar(&opts.timeout, "timeout", 2*time.Minute, "how long to wait for the removal")
	f.BoolVar(&opts.agents, "agents", false, "remove the traffic-agents this traffic-manager injected and keep the traffic-manager")
	return cmd
}

func runUninstall(ctx context.Context, d deps, opts uninstallOptions) error {
	cfg := install.Config{
		Kubeconfig: opts.kubeconfig,
		Context:    opts.context,
		Namespace:  opts.managerNamespace,
		Timeout:    opts.timeout,
		Events:     installProgress(d.stderr),
		Log:        d.log,
	}
	// Agents go first, while the manager's webhook still runs: the restored pod templates then
	// roll out without agents, and no workload keeps a sidecar whose manager is gone.
	if err := install.RemoveAgents(ctx, cfg); err != nil {
		return fmt.Errorf("remove the traffic-agents: %w", err)
	}
	if opts.agents {
		fmt.Fprintln(d.stdout, "Traffic agents removed; the traffic-manager stays")
		return nil
	}
	if err := install.Uninstall(ctx, cfg); err != nil {
		return fmt.Errorf("uninstall the traffic-manager from namespace %s: %w", opts.managerNamespace, err)
	}
	fmt.Fprintf(d.stdout, "Traffic Manager uninstalled from namespace %s\n", opts.managerNamespace)
	return nil
}
