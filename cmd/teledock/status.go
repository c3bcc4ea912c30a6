package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/daemoncontainer/launcher"
)

type statusOptions struct {
	output string
	name   string
	watch  bool
	// every is how often --watch asks; a variable for tests.
	every time.Duration
}

func newStatusCmd(d deps) *cobra.Command {
	var opts statusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the connection's daemon, DNS, subnets and traffic-manager",
		Long: "Show the connection's daemon, DNS, subnets and traffic-manager.\n\n" +
			"Works when not connected: the daemon is then reported as not running.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runStatus(cmd.Context(), d, opts) },
	}
	cmd.Flags().StringVarP(&opts.output, "output", "o", "", "output format: json or yaml")
	cmd.Flags().StringVar(&opts.name, "name", "default", "connection name")
	cmd.Flags().BoolVarP(&opts.watch, "watch", "w", false, "print the status again whenever it changes, until interrupted (with -o json: one JSON object per line)")
	return cmd
}

func runStatus(ctx context.Context, d deps, opts statusOptions) error {
	if err := checkOutput(opts.output, "json", "yaml"); err != nil {
		return err
	}
	if opts.watch {
		return watchStatus(ctx, d, opts)
	}
	info, err := collectStatus(ctx, d, opts.name)
	if err != nil {
		return err
	}
	return writeStatus(d.stdout, info, opts.output)
}

// watchStatus prints the status, then again each time it changes, until ctx ends (Ctrl-C), which
// is a normal end. The daemon has no change feed, so it asks every second: a local call that costs
// little, and it also sees the container come and go, which the daemon cannot report.
func watchStatus(ctx context.Context, d deps, opts statusOptions) error {
	every := cmp.Or(opts.every, time.Second)
	var last []byte
	for {
		info, err := collectStatus(ctx, d, opts.name)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		info.SchemaVersion = schemaVersion
		b, err := json.Marshal(info)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, last) {
			last = b
			switch opts.output {
			case "json":
				_, err = d.stdout.Write(append(b, '\n'))
			case "yaml":
				err = writeStatus(d.stdout, info, "yaml")
				if err == nil {
					_, err = io.WriteString(d.stdout, "---\n")
				}
			default:
				err = writeStatus(d.stdout, info, "")
				if err == nil {
					_, err = io.WriteString(d.stdout, "\n")
				}
			}
			if err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// collectStatus gathers what Docker and the daemon know. Only Docker being unusable is an error;
// a daemon that does not answer is reported in the status itself.
func collectStatus(ctx context.Context, d deps, name string) (statusInfo, error) {
	info := statusInfo{Daemon: daemonStatus{Name: name}}
	l, err := d.launcher()
	if err != nil {
		return info, err
	}
	c, err := l.Find(ctx, name)
	switch {
	case errors.Is(err, launcher.ErrNotFound):
		return info, nil
	case err != nil:
		return info, err
	}
	info.Daemon.Container = c.Name
	info.Daemon.ContainerState = c.State
	if !c.Running {
		info.Daemon.Stopped = stoppedStatusOf(c)
		return info, nil
	}
	client, err := dialDaemon(d, c)
	if err != nil {
		info.Daemon.Running = true
		info.Daemon.Error = err.Error()
		return info, nil
	}
	defer client.Close()
	st, err := client.status(ctx)
	if err != nil {
		info.Daemon.Running = true
		info.Daemon.Error = err.Error()
		return info, nil
	}
	return newStatusInfo(c, st), nil
}

// statusInfo is what `status -o json|yaml` and `connect -o json` print.
type statusInfo struct {
	SchemaVersion  int                   `json:"schemaVersion" yaml:"schemaVersion"`
	Daemon         daemonStatus          `json:"daemon"`
	TrafficManager *trafficManagerStatus `json:"traffic_manager,omitempty"`
}

type daemonStatus struct {
	Running           bool               `json:"running"`
	Name              string             `json:"name"`
	Container         string             `json:"container,omitempty"`
	ContainerState    string             `json:"container_state,omitempty"`
	Stopped           *stoppedStatus     `json:"stopped,omitempty"` // how a container that is not running stopped
	Version           string             `json:"version,omitempty"`
	Status            string             `json:"status,omitempty"` // the session's state
	Error             string             `json:"error,omitempty"`
	SessionID         string             `json:"session_id,omitempty"`
	KubernetesContext string             `json:"kubernetes_context,omitempty"`
	KubernetesServer  string             `json:"kubernetes_server,omitempty"`
	Namespace         string             `json:"namespace,omitempty"`
	ManagerNamespace  string             `json:"manager_namespace,omitempty"`
	Intercepts        int                `json:"intercepts"`
	InterceptList     []interceptSummary `json:"intercept_list,omitempty"`
	Transport         string             `json:"transport,omitempty"`       // what carries the tunnels
	TransportError    string             `json:"transport_error,omitempty"` // why not the direct port
	NetworkReady      bool               `json:"network_ready"`
	NetworkError      string             `json:"network_error,omitempty"`
	DNS               *dnsStatus         `json:"dns,omitempty"`
	Subnets           []string           `json:"subnets,omitempty"`
}

// stoppedStatus says how the daemon's container stopped, and what to do.
type stoppedStatus struct {
	ExitCode   int       `json:"exit_code"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Reason     string    `json:"reason"`
}

// stoppedStatusOf tells from Docker's record why a daemon container stopped. The daemon exits by
// itself only on quit (which removes the container), so a container that is still there was
// stopped from outside or failed.
func stoppedStatusOf(c *launcher.Container) *stoppedStatus {
	st := &stoppedStatus{ExitCode: c.ExitCode, FinishedAt: c.FinishedAt}
	switch {
	case c.State == "created":
		st.Reason = "created but never started"
	case c.OOMKilled:
		st.Reason = "killed: out of memory"
	case c.ExitCode == 137:
		st.Reason = "killed (docker kill, or Docker stopped without waiting for it)"
	case c.ExitCode == 0 || c.ExitCode == 143:
		st.Reason = "stopped by Docker (docker stop, or Docker itself stopped or restarted); its session and intercepts ended with it"
	default:
		st.Reason = fmt.Sprintf("the daemon failed; see `docker logs %s`", c.Name)
	}
	return st
}

// interceptSummary is one intercept in status: its name and owner (the client's name@host).
type interceptSummary struct {
	Name       string        `json:"name"`
	Owner      string        `json:"owner"`
	HTTPFilter string        `json:"http_filter,omitempty"`
	Wiretap    bool          `json:"wiretap,omitempty"`
	Counters   *countersJSON `json:"counters,omitempty"`
}

// describe is what status says after the intercept's owner: its filter or wiretap and what its
// counters counted, e.g. " (HTTP filter header x-dev=alice; 3 requests)".
func (s interceptSummary) describe() string {
	var parts []string
	switch {
	case s.Wiretap:
		parts = append(parts, "wiretap of "+cmp.Or(s.HTTPFilter, "all requests"))
	case s.HTTPFilter != "":
		parts = append(parts, "HTTP filter "+s.HTTPFilter)
	}
	if c := s.Counters; c != nil {
		if s.Wiretap {
			parts = append(parts, fmt.Sprintf("%d copies, %d dropped", c.Copied, c.Dropped))
		} else {
			parts = append(parts, fmt.Sprintf("%d requests", c.Intercepted))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

type dnsStatus struct {
	ResolverAddress string   `json:"resolver_address,omitempty"`
	SearchPath      []string `json:"search_path,omitempty"`
	Timeout         string   `json:"timeout,omitempty"`
	ClusterDomain   string   `json:"cluster_domain,omitempty"`
	ClusterDNS      string   `json:"cluster_dns,omitempty"`
}

type trafficManagerStatus struct {
	Connected  bool   `json:"connected"`
	Version    string `json:"version,omitempty"`
	AgentImage string `json:"agent_image,omitempty"`
}

func newStatusInfo(c *launcher.Container, st *daemonv1.StatusResponse) statusInfo {
	ds := daemonStatus{
		Running:           true,
		Name:              c.Connection,
		Container:         c.Name,
		ContainerState:    c.State,
		Version:           st.GetVersion(),
		Status:            st.GetSessionState(),
		Error:             st.GetLastError(),
		SessionID:         st.GetSessionId(),
		KubernetesContext: st.GetKubeContext(),
		KubernetesServer:  st.GetServer(),
		Namespace:         st.GetNamespace(),
		ManagerNamespace:  st.GetManagerNamespace(),
		Intercepts:        int(st.GetIntercepts()),
		NetworkReady:      st.GetNetworkReady(),
		NetworkError:      st.GetNetworkError(),
		Transport:         st.GetTransport(),
		TransportError:    st.GetTransportError(),
		Subnets:           append(append([]string(nil), st.GetServiceSubnets()...), st.GetPodSubnets()...),
	}
	for _, ic := range st.GetInterceptList() {
		ds.InterceptList = append(ds.InterceptList, interceptSummary{Name: ic.GetName(), Owner: ic.GetOwner(),
			HTTPFilter: ic.GetHttpFilter(), Wiretap: ic.GetWiretap(), Counters: newCountersJSON(ic.GetCounters())})
	}
	if dns := st.GetDns(); dns != nil {
		ds.DNS = &dnsStatus{
			ResolverAddress: dns.GetResolverAddress(),
			SearchPath:      dns.GetSearchPath(),
			ClusterDomain:   dns.GetClusterDomain(),
			ClusterDNS:      dns.GetDnsIp(),
		}
		if ms := dns.GetTimeoutMs(); ms > 0 {
			ds.DNS.Timeout = (time.Duration(ms) * time.Millisecond).String()
		}
	}
	info := statusInfo{SchemaVersion: schemaVersion, Daemon: ds}
	if m := st.GetManager(); m != nil {
		info.TrafficManager = &trafficManagerStatus{Connected: m.GetConnected(), Version: m.GetVersion(), AgentImage: m.GetAgentImage()}
	}
	return info
}

func writeStatus(w io.Writer, info statusInfo, output string) error {
	info.SchemaVersion = schemaVersion
	switch output {
	case "json":
		return writeJSON(w, info)
	case "yaml":
		b, err := yaml.Marshal(info)
		if err != nil {
			return fmt.Errorf("encode status: %w", err)
		}
		_, err = w.Write(b)
		return err
	default:
		_, err := io.WriteString(w, renderStatus(info))
		return err
	}
}

// renderStatus lays the status out like the seed's `telepresence status`: blocks of aligned
// "Field: value" lines.
func renderStatus(info statusInfo) string {
	var b strings.Builder
	ds := info.Daemon
	if !ds.Running {
		b.WriteString("Daemon: Not running\n")
		if ds.Container != "" {
			fmt.Fprintf(&b, "  Container: %s (%s)\n", ds.Container, ds.ContainerState)
		}
		if st := ds.Stopped; st != nil {
			when := ""
			if !st.FinishedAt.IsZero() {
				when = " at " + st.FinishedAt.Local().Format(time.DateTime)
			}
			fmt.Fprintf(&b, "  Stopped%s, exit code %d: %s\n", when, st.ExitCode, st.Reason)
			b.WriteString("  Run `teledock connect` to start it again.\n")
		}
		return b.String()
	}
	b.WriteString("Daemon: Running\n")
	fields := []field{
		{"Version", ds.Version},
		{"Container", ds.Container},
		{"Status", title(ds.Status)},
		{"Error", ds.Error},
		{"Kubernetes server", ds.KubernetesServer},
		{"Kubernetes context", ds.KubernetesContext},
		{"Namespace", ds.Namespace},
		{"Manager namespace", ds.ManagerNamespace},
		{"Network", networkState(ds)},
		{"Transport", transportState(ds)},
	}
	if ds.Status != "" {
		fields = append(fields, field{"Intercepts", fmt.Sprintf("%d total", ds.Intercepts)})
	}
	if ds.DNS != nil {
		fields = append(fields, field{"DNS", ""})
	}
	if len(ds.Subnets) > 0 {
		fields = append(fields, field{"Subnets", fmt.Sprintf("(%d subnets)", len(ds.Subnets))})
	}
	width := fieldWidth(fields)
	for _, f := range fields {
		switch {
		case f.name == "DNS":
			fmt.Fprintf(&b, "  %-*s:\n", width, f.name)
			writeFields(&b, "    ", []field{
				{"Resolver address", ds.DNS.ResolverAddress},
				{"Search path", listValue(ds.DNS.SearchPath)},
				{"Timeout", ds.DNS.Timeout},
				{"Cluster domain", ds.DNS.ClusterDomain},
				{"Cluster DNS", ds.DNS.ClusterDNS},
			})
		case f.name == "Intercepts":
			fmt.Fprintf(&b, "  %-*s: %s\n", width, f.name, f.value)
			for _, ic := range ds.InterceptList {
				fmt.Fprintf(&b, "    %s: %s%s\n", ic.Name, ic.Owner, ic.describe())
			}
		case f.name == "Subnets":
			fmt.Fprintf(&b, "  %-*s: %s\n", width, f.name, f.value)
			for _, s := range ds.Subnets {
				fmt.Fprintf(&b, "    - %s\n", s)
			}
		case f.value != "":
			fmt.Fprintf(&b, "  %-*s: %s\n", width, f.name, f.value)
		}
	}
	if tm := info.TrafficManager; tm != nil {
		state := "Not connected"
		if tm.Connected {
			state = "Connected"
		}
		fmt.Fprintf(&b, "Traffic Manager: %s\n", state)
		writeFields(&b, "  ", []field{{"Version", tm.Version}, {"Agent image", tm.AgentImage}})
	}
	return b.String()
}

type field struct{ name, value string }

func fieldWidth(fs []field) int {
	w := 0
	for _, f := range fs {
		w = max(w, len(f.name))
	}
	return w
}

// writeFields writes the fields that have a value, aligned among themselves.
func writeFields(b *strings.Builder, indent string, fs []field) {
	var set []field
	for _, f := range fs {
		if f.value != "" {
			set = append(set, f)
		}
	}
	w := fieldWidth(set)
	for _, f := range set {
		fmt.Fprintf(b, "%s%-*s: %s\n", indent, w, f.name, f.value)
	}
}

func networkState(ds daemonStatus) string {
	switch {
	case ds.NetworkError != "":
		return "Failed: " + ds.NetworkError
	case ds.NetworkReady:
		return "Ready"
	case ds.Status == "":
		return ""
	default:
		return "Not started"
	}
}

func transportState(ds daemonStatus) string {
	if ds.TransportError != "" {
		return ds.Transport + " (" + ds.TransportError + ")"
	}
	return ds.Transport
}

func listValue(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return "[" + strings.Join(l, " ") + "]"
}

func title(s string) string {
	if s == "" {
		return ""
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func checkOutput(output string, allowed ...string) error {
	if output == "" {
		return nil
	}
	for _, a := range allowed {
		if output == a {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q: use %s", output, strings.Join(allowed, " or "))
}
