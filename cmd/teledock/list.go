package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

type listOptions struct {
	connection string
	output     string
}

func newListCmd(d deps) *cobra.Command {
	var opts listOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the workloads that can be intercepted and their intercepts",
		Long: "List the workloads of the connection's namespace that can be intercepted, with their state as\n" +
			"the traffic-manager reports it and, for intercepted ones, the intercept and its owner.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runList(cmd.Context(), d, opts) },
	}
	cmd.Flags().StringVar(&opts.connection, "name", "default", "connection name")
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json")
	return cmd
}

func runList(ctx context.Context, d deps, opts listOptions) error {
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
	resp, err := client.ListWorkloads(ctx, &daemonv1.ListWorkloadsRequest{})
	if err != nil {
		return fmt.Errorf("list: %w", fromDaemon(err))
	}
	workloads := slices.Clone(resp.GetWorkloads())
	slices.SortFunc(workloads, func(a, b *managerv1.WorkloadInfo) int { return cmp.Compare(a.GetName(), b.GetName()) })
	if opts.output == "json" {
		return writeJSON(d.stdout, workloadsJSON{SchemaVersion: schemaVersion, Workloads: newWorkloadsJSON(workloads)})
	}
	_, err = io.WriteString(d.stdout, renderWorkloads(workloads))
	return err
}

// renderWorkloads lays out the list like the seed's `telepresence list`: "NAME: STATE", and under an
// intercepted workload its intercepts.
func renderWorkloads(workloads []*managerv1.WorkloadInfo) string {
	if len(workloads) == 0 {
		return "No interceptable workloads (Deployments, ReplicaSets, StatefulSets) in the connection's namespace\n"
	}
	var b strings.Builder
	for _, w := range workloads {
		fmt.Fprintf(&b, "%s: %s\n", w.GetName(), w.GetState())
		for _, ic := range w.GetIntercepts() {
			writeFields(&b, "    ", []field{
				{"Intercept name", ic.GetName()},
				{"State", ic.GetState()},
				{"Owner", ic.GetClient()},
				filterField(ic),
				{"Requests", counterText(ic)},
			})
		}
	}
	return b.String()
}

type workloadJSON struct {
	Name           string               `json:"name"`
	Kind           string               `json:"kind"`
	Namespace      string               `json:"namespace"`
	State          string               `json:"state"`
	AgentInstalled bool                 `json:"agent_installed"`
	Services       []string             `json:"services,omitempty"`
	Intercepts     []workloadInterceptJ `json:"intercepts,omitempty"`
}

type workloadInterceptJ struct {
	Name       string          `json:"name"`
	State      string          `json:"state"`
	Owner      string          `json:"owner"`
	HTTPFilter string          `json:"http_filter,omitempty"`
	Filter     *httpFilterJSON `json:"filter,omitempty"`
	Wiretap    bool            `json:"wiretap,omitempty"`
	Counters   *countersJSON   `json:"counters,omitempty"`
}

// workloadsJSON is what `list -o json` prints.
type workloadsJSON struct {
	SchemaVersion int            `json:"schemaVersion"`
	Workloads     []workloadJSON `json:"workloads"`
}

func newWorkloadsJSON(workloads []*managerv1.WorkloadInfo) []workloadJSON {
	out := make([]workloadJSON, 0, len(workloads))
	for _, w := range workloads {
		j := workloadJSON{
			Name:           w.GetName(),
			Kind:           w.GetKind(),
			Namespace:      w.GetNamespace(),
			State:          w.GetState(),
			AgentInstalled: w.GetAgentInstalled(),
			Services:       w.GetServices(),
		}
		for _, ic := range w.GetIntercepts() {
			j.Intercepts = append(j.Intercepts, workloadInterceptJ{Name: ic.GetName(), State: ic.GetState(), Owner: ic.GetClient(),
				HTTPFilter: ic.GetHttpFilter(), Filter: newHTTPFilterJSON(ic.GetFilter()), Wiretap: ic.GetWiretap(), Counters: newCountersJSON(ic.GetCounters())})
		}
		out = append(out, j)
	}
	return out
}
