package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/mounts"
)

type interceptOptions struct {
	name       string // the intercept's name (the argument)
	port       string // --port LOCAL[:SVCPORT]
	service    string
	workload   string
	mechanism  string
	toPod      []string // --to-pod PORT[/UDP]
	address    string   // --address IP|CONTAINER
	replace    bool
	envFile    string
	envJSON    string
	dockerRun  bool
	dockerArgs []string // after --, with --docker-run
	connection string   // --name
	output     string
	timeout    time.Duration
	mount      mountOptions
	filter     httpFilterOptions
}

func newInterceptCmd(d deps) *cobra.Command {
	var opts interceptOptions
	cmd := &cobra.Command{
		Use:   "intercept NAME [--port LOCAL[:SVCPORT]] [flags] [--docker-run -- [docker run flags] IMAGE [ARGS...]]",
		Short: "Intercept a workload: the traffic the cluster sends to it comes to a local container",
		Long: "Intercept a workload: the connections the cluster sends to one of its service ports are delivered\n" +
			"to LOCAL on 127.0.0.1 in the connection's network, where containers started with `teledock run`\n" +
			"or --docker-run listen (or to --address).\n\n" +
			"The workload is NAME unless -w/--workload is given. LOCAL defaults to the intercepted container\n" +
			"port; SVCPORT (a service port name or number) picks the port when the service has several.\n" +
			"Creating an intercept of the same name again changes it. --to-pod PORT makes the pod's\n" +
			"localhost:PORT (its sidecars) reachable at 127.0.0.1:PORT in the connection's network.\n\n" +
			"With --docker-run, the container after -- runs in the connection's network with the pod's\n" +
			"environment, named after the intercept unless --name is among its flags; when it exits, the\n" +
			"intercept ends and its exit code is teledock's.\n\n" +
			"With --http-header or an --http-path flag, only the HTTP requests that match come to LOCAL and the\n" +
			"app answers the others, so that several developers can intercept one port with their own filters.\n" +
			"--wiretap sends a copy of each request while the app answers it.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			switch {
			case opts.dockerRun && dash != 1:
				return errors.New("--docker-run needs the container after --: intercept NAME [flags] --docker-run -- [docker run flags] IMAGE [ARGS...]")
			case !opts.dockerRun && len(args) > 1:
				return fmt.Errorf("unexpected arguments %q: a container to run goes after --docker-run --", args[1:])
			}
			opts.name, opts.dockerArgs = args[0], args[1:]
			return runIntercept(cmd.Context(), d, opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.port, "port", "p", "", "LOCAL[:SVCPORT]: local port, and the service port's name or number (default: the intercepted container port)")
	f.StringVar(&opts.service, "service", "", "the service to intercept, when several select the workload")
	f.StringVarP(&opts.workload, "workload", "w", "", "the workload to intercept (default NAME)")
	f.StringVar(&opts.mechanism, "mechanism", "tcp", "intercept mechanism; only tcp")
	f.StringArrayVar(&opts.toPod, "to-pod", nil, "PORT[/UDP]: make the pod's localhost:PORT reachable at 127.0.0.1:PORT (repeatable)")
	f.StringVar(&opts.address, "address", "", "IP or container name to deliver to, instead of 127.0.0.1 in the connection's network")
	f.BoolVar(&opts.replace, "replace", false, "stop the intercepted container in the pod while the intercept lasts")
	f.StringVarP(&opts.envFile, "env-file", "e", "", "write the pod's environment to this file (docker --env-file format)")
	f.StringVarP(&opts.envJSON, "env-json", "j", "", "write the pod's environment to this file as a JSON object")
	f.BoolVar(&opts.dockerRun, "docker-run", false, "run the container given after -- as the intercept's handler")
	f.StringVar(&opts.connection, "name", "default", "connection name")
	f.StringVarP(&opts.output, "output", "o", "", "output format: json")
	f.DurationVar(&opts.timeout, "timeout", 2*time.Minute, "how long to wait for the traffic-agent to be ready")
	f.StringVar(&opts.mount.mount, "mount", "true", "the pod's volume mounts as Docker volumes: true (at the pod's paths in --docker-run and `teledock run --intercept` containers), false, or a folder to put them under")
	f.Lookup("mount").NoOptDefVal = "true"
	opts.filter.addFlags(f)
	f.BoolVar(&opts.mount.readOnly, "mount-readonly", false, "make every mount read-only")
	f.StringVar(&opts.mount.mode, "mount-mode", "auto", "auto (the volume plugin, else copies), plugin (live, writes reach the pod), or copy (refreshed copies, writes stay local)")
	return cmd
}

func runIntercept(ctx context.Context, d deps, opts interceptOptions) error {
	req, err := opts.request()
	if err != nil {
		return err
	}
	var handler dockerRunArgs
	if opts.dockerRun {
		if handler, err = checkHandlerArgs(opts.dockerArgs); err != nil {
			return err
		}
	}

	c, client, err := openDaemon(ctx, d, opts.connection)
	if err != nil {
		return err
	}
	defer client.Close()

	if opts.address != "" {
		docker, err := d.docker()
		if err != nil {
			return err
		}
		addr, err := resolveAddress(ctx, docker, c.Name, opts.address)
		if err != nil {
			return err
		}
		req.Address = addr.String()
	}
	if err := checkLocalPort(ctx, client, req); err != nil {
		return err
	}

	cctx, cancel := context.WithTimeout(ctx, opts.timeout)
	stop := notifyWait(d.stderr, 2*time.Second, 5*time.Second, fmt.Sprintf(
		"the traffic-agent of %s (injection and rollout; up to %s)", workloadOf(opts), opts.timeout))
	info, err := client.CreateIntercept(cctx, req)
	stop()
	cancel()
	if err != nil {
		return interceptError(opts.name, err)
	}

	vols := mountVolumes(ctx, d, c, info, opts.mount)
	if vols != nil && vols.Error == "" {
		info.MountPoint = vols.Root
		if vols.Notice != "" {
			fmt.Fprintln(d.stderr, vols.Notice)
		}
	}
	undo := func() {
		leaveQuietly(d, client, opts.name) // an intercept the user was not told about must not stay
		if vols != nil {
			removeVolumes(d, c.Connection, opts.name)
		}
	}
	if err := writeIntercept(d.stdout, info, vols, opts.output); err != nil {
		undo()
		return err
	}
	if err := writeEnv(d, opts, info.GetEnvironment()); err != nil {
		undo()
		return err
	}
	if opts.dockerRun {
		release, err := holdIntercept(ctx, client, opts.name)
		if err != nil {
			undo()
			return err
		}
		defer release()
		defer undo()
		return runHandler(ctx, d, c, info, vols, opts.dockerArgs, handler)
	}
	return nil
}

// request checks the flags and turns them into the daemon's request; --address is resolved later
// because a container name needs Docker.
func (o interceptOptions) request() (*daemonv1.CreateInterceptRequest, error) {
	if err := checkOutput(o.output, "json"); err != nil {
		return nil, err
	}
	if err := launcher.ValidateName(o.connection); err != nil {
		return nil, err
	}
	if o.name == "" {
		return nil, errors.New("the intercept needs a name")
	}
	if o.mechanism != "tcp" {
		return nil, fmt.Errorf("--mechanism %q: only tcp is supported", o.mechanism)
	}
	if o.timeout <= 0 {
		return nil, errors.New("--timeout must be positive")
	}
	if _, err := o.mount.root(); err != nil {
		return nil, err
	}
	if _, err := mounts.ParseMode(o.mount.mode); err != nil {
		return nil, err
	}
	local, svcPort, err := parsePort(o.port)
	if err != nil {
		return nil, err
	}
	filter, err := o.filter.filter(o.replace)
	if err != nil {
		return nil, err
	}
	req := &daemonv1.CreateInterceptRequest{
		Name:        o.name,
		Workload:    o.workload,
		Service:     o.service,
		ServicePort: svcPort,
		LocalPort:   int32(local),
		Mechanism:   o.mechanism,
		Replace:     o.replace,
		Held:        o.dockerRun, // runIntercept holds it right after the create
		HttpFilter:  filter,
		Wiretap:     o.filter.wiretap,
	}
	for _, s := range o.toPod {
		p, err := parseToPod(s)
		if err != nil {
			return nil, err
		}
		req.ToPod = append(req.ToPod, p)
	}
	return req, nil
}

// svcPortName is a Kubernetes port name (an IANA service name is stricter; a DNS label is what the
// API server accepts for service ports).
var svcPortName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// parsePort parses --port LOCAL[:SVCPORT]. An empty value means "the intercepted container port"
// and no service port.
func parsePort(s string) (local uint16, svcPort string, err error) {
	if s == "" {
		return 0, "", nil
	}
	l, sp, hasSvc := strings.Cut(s, ":")
	local, err = portNumber(l)
	if err != nil {
		return 0, "", fmt.Errorf("--port %q: local port: %w", s, err)
	}
	if hasSvc {
		if sp == "" {
			return 0, "", fmt.Errorf("--port %q: empty service port after ':'", s)
		}
		if _, nerr := strconv.Atoi(sp); nerr == nil {
			if _, err := portNumber(sp); err != nil {
				return 0, "", fmt.Errorf("--port %q: service port: %w", s, err)
			}
		} else if !svcPortName.MatchString(sp) {
			return 0, "", fmt.Errorf("--port %q: service port %q is neither a number nor a port name", s, sp)
		}
	}
	return local, sp, nil
}

// parseToPod parses --to-pod PORT[/TCP|/UDP] (case-insensitive).
func parseToPod(s string) (*managerv1.ToPod, error) {
	p, proto, hasProto := strings.Cut(s, "/")
	port, err := portNumber(p)
	if err != nil {
		return nil, fmt.Errorf("--to-pod %q: %w", s, err)
	}
	tp := &managerv1.ToPod{Port: int32(port), Protocol: managerv1.Protocol_PROTOCOL_TCP}
	if hasProto {
		switch strings.ToUpper(proto) {
		case "TCP":
		case "UDP":
			tp.Protocol = managerv1.Protocol_PROTOCOL_UDP
		default:
			return nil, fmt.Errorf("--to-pod %q: protocol %q: use TCP or UDP", s, proto)
		}
	}
	return tp, nil
}

func portNumber(s string) (uint16, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

// checkHandlerArgs checks the --docker-run container's docker flags as `teledock run` does; a
// detached container would end the intercept at once, since the intercept lasts as long as it.
func checkHandlerArgs(args []string) (dockerRunArgs, error) {
	scanned, err := scanDockerRunArgs(args, "intercept --docker-run")
	if err != nil {
		return scanned, err
	}
	if scanned.image < 0 {
		return scanned, errors.New("no image: usage is intercept NAME [flags] --docker-run -- [docker run flags] IMAGE [ARGS...]")
	}
	if scanned.detach {
		return scanned, errors.New("-d/--detach cannot be used with intercept --docker-run: the intercept lasts as long as the container runs in the foreground; use `teledock run -d` after `teledock intercept` instead")
	}
	return scanned, nil
}

// checkLocalPort refuses, before the manager is asked, a local port that another intercept of this
// connection already delivers to: a connection arriving there could not be told apart. The daemon
// checks again (two CLIs may race, and a default LOCAL is only known afterwards).
func checkLocalPort(ctx context.Context, client *daemonClient, req *daemonv1.CreateInterceptRequest) error {
	if req.GetLocalPort() == 0 {
		return nil
	}
	addr := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if a := req.GetAddress(); a != "" {
		addr = netip.MustParseAddr(a) // resolveAddress returned it
	}
	dest := netip.AddrPortFrom(addr, uint16(req.GetLocalPort())).String()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := client.ListIntercepts(lctx, &daemonv1.ListInterceptsRequest{})
	if err != nil {
		return fmt.Errorf("list intercepts: %w", fromDaemon(err))
	}
	for _, ic := range list.GetIntercepts() {
		if ic.GetName() != req.GetName() && ic.GetDestination() == dest {
			return fmt.Errorf("intercept %s: %w: %s is the destination of intercept %s", req.GetName(), errLocalPortInUse, dest, ic.GetName())
		}
	}
	return nil
}

// interceptError gives the daemon's error its meaning for `intercept`.
func interceptError(name string, err error) error {
	err = fromDaemon(err)
	switch {
	case errors.Is(err, errNotFound):
		err = refine(errUnknownWorkload, err)
	case errors.Is(err, errDeadline):
		err = refine(errAgentNotReady, err)
	}
	return fmt.Errorf("intercept %s: %w", name, err)
}

// refined is err in a more precise category; its text is err's.
type refined struct{ kind, err error }

func refine(kind, err error) error { return &refined{kind: kind, err: err} }
func (r *refined) Error() string   { return r.err.Error() }
func (r *refined) Unwrap() []error { return []error{r.kind, r.err} }

// writeEnv writes the -e and -j files the user asked for.
func writeEnv(d deps, opts interceptOptions, env map[string]string) error {
	if opts.envFile != "" {
		skipped, err := writeEnvFile(opts.envFile, env)
		if err != nil {
			return err
		}
		if len(skipped) > 0 {
			fmt.Fprintf(d.stderr, "Left out of %s (docker --env-file cannot hold them): %s\n", opts.envFile, strings.Join(skipped, ", "))
		}
	}
	if opts.envJSON != "" {
		skipped, err := writeEnvJSON(opts.envJSON, env)
		if err != nil {
			return err
		}
		if len(skipped) > 0 {
			fmt.Fprintf(d.stderr, "Left out of %s (JSON cannot hold them: not UTF-8): %s\n", opts.envJSON, strings.Join(skipped, ", "))
		}
	}
	return nil
}

// leaveQuietly ends an intercept on a path that is already failing or finished; ctx may be gone, so
// it has its own deadline. An intercept that is already gone is fine.
func leaveQuietly(d deps, client *daemonClient, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := client.RemoveIntercept(ctx, &daemonv1.RemoveInterceptRequest{Name: name})
	if err != nil && !errors.Is(fromDaemon(err), errNotFound) {
		fmt.Fprintf(d.stderr, "teledock: leaving intercept %s: %v\n", name, fromDaemon(err))
	}
}

// writeIntercept prints the intercept as the seed's block, or as JSON.
func writeIntercept(w io.Writer, info *managerv1.InterceptInfo, vols *mountReport, output string) error {
	if output == "json" {
		j := newInterceptJSON(info)
		j.SchemaVersion = schemaVersion
		if vols != nil {
			j.VolumeMountError, j.MountMode, j.Volumes = vols.Error, string(vols.Mode), vols.Volumes
		}
		return writeJSON(w, j)
	}
	text := renderIntercept(info)
	if vols != nil && vols.Error != "" {
		text = renderInterceptWith(info, field{"Volume Mount Error", vols.Error})
	}
	_, err := io.WriteString(w, text)
	return err
}

// renderIntercept lays an intercept out like the seed's `telepresence intercept`:
//
//	Using Deployment echo
//	intercepted
//	    Intercept name         : echo
//	    ...
//
// Fields without a value are left out, and the names align among those shown.
func renderIntercept(info *managerv1.InterceptInfo) string { return renderInterceptWith(info) }

// renderInterceptWith adds fields after the Volume Mount Point.
func renderInterceptWith(info *managerv1.InterceptInfo, extra ...field) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Using %s %s\n", info.GetWorkloadKind(), info.GetWorkload())
	b.WriteString("intercepted\n")
	var fields []field
	for _, f := range interceptFields(info) {
		fields = append(fields, f)
		if f.name == "Volume Mount Point" {
			fields = append(fields, extra...)
		}
	}
	writeFields(&b, "    ", fields)
	return b.String()
}

func interceptFields(info *managerv1.InterceptInfo) []field {
	return []field{
		{"Intercept name", info.GetName()},
		{"State", info.GetState()},
		{"Workload kind", info.GetWorkloadKind()},
		{"Destination", info.GetDestination()},
		{"Service Port Identifier", info.GetServicePortIdentifier()},
		{"Volume Mount Point", info.GetMountPoint()},
		{"Intercepting", intercepting(info)},
		filterField(info),
		{"Address", podAddress(info)},
	}
}

// podAddress is shown for service-less intercepts only: without a service there is no name to
// reach the workload by, so the pod's address is how to send it traffic.
func podAddress(info *managerv1.InterceptInfo) string {
	if info.GetServiceLess() || info.GetService() == "" {
		return info.GetPodAddress()
	}
	return ""
}

func intercepting(info *managerv1.InterceptInfo) string {
	switch {
	case info.GetWiretap():
		return "copies of HTTP requests"
	case info.GetHttpFilter() != "":
		return "HTTP requests that match the filter"
	case info.GetProtocol() == managerv1.Protocol_PROTOCOL_UDP:
		return "all UDP datagrams"
	}
	return "all TCP connections"
}

// interceptJSON is what `intercept -o json` prints. The environment is left out: -e and -j write
// it to files, so that secrets do not end up in terminals and logs.
type interceptJSON struct {
	// SchemaVersion is set when the intercept is the document, not part of one.
	SchemaVersion         int             `json:"schemaVersion,omitempty"`
	Name                  string          `json:"name"`
	ID                    string          `json:"id"`
	State                 string          `json:"state"`
	Namespace             string          `json:"namespace,omitempty"`
	Workload              string          `json:"workload"`
	WorkloadKind          string          `json:"workload_kind"`
	Service               string          `json:"service,omitempty"`
	ServicePortIdentifier string          `json:"service_port_identifier,omitempty"`
	ServicePort           int32           `json:"service_port,omitempty"`
	TargetPort            int32           `json:"target_port,omitempty"`
	Destination           string          `json:"destination"`
	VolumeMountPoint      string          `json:"volume_mount_point,omitempty"`
	VolumeMountError      string          `json:"volume_mount_error,omitempty"`
	MountMode             string          `json:"mount_mode,omitempty"`
	Volumes               []mounts.Volume `json:"volumes,omitempty"`
	Intercepting          string          `json:"intercepting"`
	Address               string          `json:"address,omitempty"`
	Owner                 string          `json:"owner,omitempty"`
	Replace               bool            `json:"replace,omitempty"`
	ToPod                 []string        `json:"to_pod,omitempty"`
	HTTPFilter            string          `json:"http_filter,omitempty"` // as the block shows it
	Filter                *httpFilterJSON `json:"filter,omitempty"`
	Wiretap               bool            `json:"wiretap,omitempty"`
	Counters              *countersJSON   `json:"counters,omitempty"`
}

func newInterceptJSON(info *managerv1.InterceptInfo) interceptJSON {
	j := interceptJSON{
		Name:                  info.GetName(),
		ID:                    info.GetId(),
		State:                 info.GetState(),
		Namespace:             info.GetNamespace(),
		Workload:              info.GetWorkload(),
		WorkloadKind:          info.GetWorkloadKind(),
		Service:               info.GetService(),
		ServicePortIdentifier: info.GetServicePortIdentifier(),
		ServicePort:           info.GetServicePort(),
		TargetPort:            info.GetTargetPort(),
		Destination:           info.GetDestination(),
		VolumeMountPoint:      info.GetMountPoint(),
		Intercepting:          intercepting(info),
		Address:               podAddress(info),
		Owner:                 info.GetClient(),
		Replace:               info.GetReplace(),
		HTTPFilter:            info.GetHttpFilter(),
		Filter:                newHTTPFilterJSON(info.GetFilter()),
		Wiretap:               info.GetWiretap(),
		Counters:              newCountersJSON(info.GetCounters()),
	}
	for _, p := range info.GetToPod() {
		s := strconv.Itoa(int(p.GetPort()))
		if p.GetProtocol() == managerv1.Protocol_PROTOCOL_UDP {
			s += "/UDP"
		}
		j.ToPod = append(j.ToPod, s)
	}
	return j
}

// workloadOf is the workload an intercept names: -w/--workload, else NAME.
func workloadOf(o interceptOptions) string {
	if o.workload != "" {
		return o.workload
	}
	return o.name
}
