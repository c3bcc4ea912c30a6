package main

import (
	"context"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/spf13/cobra"

	"teledock.dev/teledock/cluster/install"
	"teledock.dev/teledock/daemoncontainer/launcher"
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
		Long: "Remove the traffic-manager release, and its namespace when `teledock install` created it.\n" +
			"The traffic-agents go first, and with them the Docker volumes of the intercepts of this\n" +
			"cluster's connections.\n\n" +
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
	// The agents served the intercepts' volumes: those of this cluster's connections are dead now.
	removeClusterVolumes(ctx, d, opts)
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

// removeClusterVolumes removes the intercept volumes of the connections whose daemon talks to the
// cluster of opts (by API server URL). Failures are only logged: uninstall itself worked.
func removeClusterVolumes(ctx context.Context, d deps, opts uninstallOptions) {
	contexts, err := launcher.Contexts(opts.kubeconfig)
	if err != nil {
		return
	}
	server := ""
	for _, c := range contexts {
		if c.Name == opts.context || (opts.context == "" && c.Current) {
			server = c.Server
		}
	}
	docker, err := d.docker()
	if server == "" || err != nil {
		return
	}
	daemons, err := docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", launcher.LabelServer+"="+server))})
	if err != nil {
		d.log.Debug("volumes of the cluster's connections not removed", "err", err)
		return
	}
	for _, c := range daemons {
		if name := c.Labels[launcher.LabelName]; name != "" {
			removeVolumes(d, name, "")
		}
	}
}
