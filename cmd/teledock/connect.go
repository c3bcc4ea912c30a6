package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/images"
	"teledock.dev/teledock/internal/pprofserver"
	"teledock.dev/teledock/internal/version"
)

type connectOptions struct {
	kubeconfig       string
	context          string
	namespace        string
	managerNamespace string
	name             string
	image            string
	imageGiven       bool // --image was set: the image is used as given, never loaded
	output           string
	transport        string
	timeout          time.Duration
}

func newConnectCmd(d deps) *cobra.Command {
	opts := connectOptions{image: images.Daemon.Ref(version.Version)}
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Connect to a cluster: start the daemon container that reaches the cluster's network",
		Long: "Connect to a cluster: start the daemon container that reaches the cluster's network.\n\n" +
			"Connect is idempotent: connecting again with the same settings reports the existing connection.\n" +
			"Several connections coexist under different --name values. On failure nothing is left behind.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.imageGiven = cmd.Flags().Changed("image")
			return runConnect(cmd.Context(), d, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&opts.context, "context", "", "kubeconfig context (default the current context)")
	f.StringVarP(&opts.namespace, "namespace", "n", "", "namespace of the workloads (default the context's namespace)")
	f.StringVar(&opts.managerNamespace, "manager-namespace", "teledock", "namespace of the traffic-manager")
	f.StringVar(&opts.name, "name", "default", "connection name; the daemon container is teledock-daemon-NAME")
	f.StringVar(&opts.image, "image", opts.image, "daemon container image")
	f.StringVarP(&opts.output, "output", "o", "", "output format: json")
	f.StringVar(&opts.transport, "transport", "auto", "what carries the tunnels: auto (the manager's direct port when `install --direct`\n"+
		"made one and it is reachable, else the port-forward), port-forward, or direct (fail if the direct port cannot be used)")
	f.DurationVar(&opts.timeout, "timeout", 60*time.Second, "how long to wait for the daemon to connect")
	return cmd
}

func runConnect(ctx context.Context, d deps, opts connectOptions) error {
	if err := checkOutput(opts.output, "json"); err != nil {
		return err
	}
	if err := launcher.ValidateName(opts.name); err != nil {
		return err
	}
	if err := checkTransport(opts.transport); err != nil {
		return err
	}
	// The kubeconfig is checked before anything is created: a wrong context must not leave a
	// container behind.
	kc, err := launcher.PrepareKubeconfig(launcher.KubeconfigOptions{
		Path: opts.kubeconfig, Context: opts.context, Namespace: opts.namespace,
	})
	if err != nil {
		return err
	}
	l, err := d.launcher()
	if err != nil {
		return err
	}

	c, err := l.Find(ctx, opts.name)
	switch {
	case errors.Is(err, launcher.ErrNotFound):
		c = nil
	case err != nil:
		return err
	case !sameConnection(c, kc, opts):
		return fmt.Errorf("%w: connection %q is connected to context %s, namespace %s, manager namespace %s",
			errConnectedElsewhere, opts.name, c.Context, c.Namespace, c.ManagerNamespace)
	}

	if c != nil && c.Running {
		if _, lerr := d.connections.Load(opts.name); lerr == nil {
			// Same settings: wait for (or just confirm) the existing daemon.
			return awaitAndReport(ctx, d, l, c, opts, false)
		}
	}
	if c != nil {
		// A stopped container, or one whose token is gone, cannot be used: replace it.
		fmt.Fprintf(d.stderr, "Removing stale daemon container %s\n", c.Name)
		if err := l.Remove(ctx, opts.name); err != nil {
			return err
		}
	}

	spec := launcher.Spec{
		Name:             opts.name,
		Image:            opts.image,
		Token:            launcher.NewToken(),
		Kubeconfig:       kc,
		ManagerNamespace: opts.managerNamespace,
		Hostname:         d.hostname,
		User:             d.username,
		Transport:        opts.transport,
	}
	// Passed on to the daemon: more logging, and the opt-in profiler (on the daemon's loopback,
	// which `teledock run` containers share).
	for _, k := range []string{"TELEDOCK_DEBUG", pprofserver.Env} {
		if v := d.getenv(k); v != "" {
			if spec.Env == nil {
				spec.Env = map[string]string{}
			}
			spec.Env[k] = v
		}
	}
	if err := ensureDaemonImage(ctx, d, opts.imageGiven); err != nil {
		return err
	}
	fmt.Fprintf(d.stderr, "Starting daemon container %s (%s)\n", launcher.ContainerName(opts.name), opts.image)
	c, err = l.Start(ctx, spec)
	if err != nil {
		return err
	}
	if err := d.connections.Save(launcher.Connection{
		Name: opts.name, Container: c.Name, Token: spec.Token, APIPort: apiPort(c.APIAddr),
	}); err != nil {
		removeConnection(d, l, opts.name)
		return err
	}
	return awaitAndReport(ctx, d, l, c, opts, true)
}

// sameConnection reports whether an existing daemon serves the requested settings.
func sameConnection(c *launcher.Container, kc *launcher.Kubeconfig, opts connectOptions) bool {
	return c.Context == kc.Context && c.Namespace == kc.Namespace &&
		c.ManagerNamespace == opts.managerNamespace && c.Server == kc.Server &&
		cmp.Or(c.Transport, "auto") == opts.transport
}

// checkTransport checks --transport; the daemon's session package owns the meaning, but the CLI
// does not import it (see deps_test.go).
func checkTransport(t string) error {
	switch t {
	case "auto", "port-forward", "direct":
		return nil
	}
	return fmt.Errorf("%w %q: use auto, port-forward or direct", errBadTransport, t)
}

// awaitAndReport waits for the daemon and prints the result; when the daemon fails, it shows the
// daemon's log and, if this connect created it, removes the container and its connection file. A
// daemon that was already running is left alone: it may carry intercepts and handler containers,
// and a connect that gave up waiting (a manager restarting, Ctrl-C) must not take them away.
func awaitAndReport(ctx context.Context, d deps, l *launcher.Launcher, c *launcher.Container, opts connectOptions, created bool) error {
	fmt.Fprintf(d.stderr, "Connecting to the traffic-manager in namespace %s\n", opts.managerNamespace)
	st, err := awaitConnected(ctx, d, l, c, opts.transport, opts.timeout)
	if err != nil {
		if showLog(err) {
			logCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if logs, lerr := l.Logs(logCtx, opts.name, 20); lerr == nil && logs != "" {
				fmt.Fprintf(d.stderr, "Last lines of the daemon's log (%s):\n%s", c.Name, indent(logs))
			}
			cancel()
		}
		if !created {
			return fmt.Errorf("%w (daemon container %s still runs; `teledock quit --name %s` removes it)", err, c.Name, opts.name)
		}
		removeConnection(d, l, opts.name)
		return err
	}
	if opts.output == "json" {
		return writeStatus(d.stdout, newStatusInfo(c, st), "json")
	}
	fmt.Fprintf(d.stdout, "Connected to context %s, namespace %s (%s)\n", st.GetKubeContext(), st.GetNamespace(), st.GetServer())
	return nil
}

// showLog decides whether the daemon's log helps: it does when the cause is unknown, not when the
// status already names it.
func showLog(err error) bool {
	return !errors.Is(err, errNoManager) && !errors.Is(err, errClusterAuth) && !errors.Is(err, errDirectUnavailable) &&
		!errors.Is(err, context.Canceled)
}

// awaitConnected polls the daemon's status until its session is connected and its network ready,
// a condition that needs the user appears, the container exits, or the timeout passes.
func awaitConnected(ctx context.Context, d deps, l *launcher.Launcher, c *launcher.Container, transport string, timeout time.Duration) (*daemonv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := dialDaemon(d, c)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	// A status call is a loopback round trip, so polling often costs nothing and takes ~100 ms off
	// every connect (the daemon is usually ready ~50 ms after its API listens).
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var said, lastErr string
	for {
		st, err := client.status(ctx)
		switch {
		case err == nil:
			if done, err := connectDone(st, transport); done {
				return st, err
			}
			lastErr = st.GetLastError()
			// Say why we are still waiting, once per reason (e.g. the manager's pod is pulling
			// its image), so that a slow connect explains itself within the deadline.
			if lastErr != "" && lastErr != said {
				fmt.Fprintf(d.stderr, "  waiting: %s\n", lastErr)
				said = lastErr
			}
		case status.Code(err) == codes.Unauthenticated:
			return nil, fmt.Errorf("daemon %s rejected the connection's token: %w", c.Name, err)
		default:
			// The API is not up yet, or the daemon died: tell those apart.
			if cur, ferr := l.Find(ctx, c.Connection); ferr == nil && !cur.Running {
				return nil, fmt.Errorf("%w (%s)", errDaemonExited, cur.State)
			}
			if lastErr == "" {
				lastErr = err.Error()
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if lastErr != "" {
					return nil, fmt.Errorf("%w after %s: %s", errConnectTimeout, timeout, lastErr)
				}
				return nil, fmt.Errorf("%w after %s", errConnectTimeout, timeout)
			}
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// connectDone decides from one status whether waiting is over, and how it ended. The daemon tries
// the direct port before its session counts as connected, so a connected session has its transport.
func connectDone(st *daemonv1.StatusResponse, transport string) (bool, error) {
	switch st.GetLastErrorCode() {
	case daemonv1.ErrorCode_ERROR_CODE_NO_MANAGER:
		return true, fmt.Errorf("%w in namespace %s", errNoManager, st.GetManagerNamespace())
	case daemonv1.ErrorCode_ERROR_CODE_CLUSTER_AUTH:
		return true, fmt.Errorf("%w: %s", errClusterAuth, st.GetLastError())
	}
	if st.GetSessionState() != "connected" {
		return false, nil
	}
	switch {
	case transport == "direct" && st.GetTransport() != "direct":
		return true, fmt.Errorf("%w: %s", errDirectUnavailable, cmp.Or(st.GetTransportError(), "the daemon does not use it"))
	case st.GetNetworkError() != "":
		return true, fmt.Errorf("%w: %s", errNetwork, st.GetNetworkError())
	case st.GetNetworkReady():
		return true, nil
	}
	return false, nil
}

// removeConnection undoes a connect: container and connection file. It runs on failure paths, so
// it must not be stopped by the context that may have failed.
func removeConnection(d deps, l *launcher.Launcher, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := l.Remove(ctx, name); err != nil {
		d.log.Warn("removing the daemon container", "connection", name, "err", err)
	}
	if err := d.connections.Remove(name); err != nil {
		d.log.Warn("removing the connection file", "connection", name, "err", err)
	}
}

// apiPort is the host port of the daemon's API, kept in the connection file for tools that read it.
func apiPort(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(port)
	return p
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "  " + strings.Join(lines, "\n  ") + "\n"
}
