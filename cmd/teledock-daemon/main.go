// Command teledock-daemon is the daemon container's entrypoint: it keeps the session with the
// traffic-manager, runs the container's network (TUN, netstack, DNS) and serves the CLI's API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/daemoncontainer/daemon"
	"teledock.dev/teledock/daemoncontainer/intercept"
	"teledock.dev/teledock/daemoncontainer/netstack"
	"teledock.dev/teledock/daemoncontainer/session"
	"teledock.dev/teledock/internal/podfs"
	"teledock.dev/teledock/internal/pprofserver"
	"teledock.dev/teledock/internal/version"
)

// config comes from the environment that the CLI's launcher sets on the container.
type config struct {
	token            string            // TELEDOCK_TOKEN, required
	kubeconfig       string            // TELEDOCK_KUBECONFIG
	context          string            // TELEDOCK_CONTEXT; "" means the kubeconfig's current context
	namespace        string            // TELEDOCK_NAMESPACE; "" means the context's namespace
	managerNamespace string            // TELEDOCK_MANAGER_NAMESPACE
	apiAddr          string            // TELEDOCK_API_ADDR
	name             string            // TELEDOCK_NAME: the connection name
	hostname         string            // TELEDOCK_HOSTNAME: the user's host, for the manager's session list
	user             string            // TELEDOCK_USER: the user's login name, for intercepts' owner
	server           string            // TELEDOCK_SERVER: the API server URL before rewriting, for status
	transport        session.Transport // TELEDOCK_TRANSPORT: auto (default), port-forward or direct
	// envDir (TELEDOCK_ENV_DIR) holds the env files that `teledock compose` wrote for the
	// project's services: pod environments, secrets included. The daemon removes them when it
	// stops, so that a plain `docker compose down` leaves none behind.
	envDir string
	debug  bool // TELEDOCK_DEBUG
}

func configFromEnv(getenv func(string) string) (config, error) {
	c := config{
		token:            getenv("TELEDOCK_TOKEN"),
		kubeconfig:       getenv("TELEDOCK_KUBECONFIG"),
		context:          getenv("TELEDOCK_CONTEXT"),
		namespace:        getenv("TELEDOCK_NAMESPACE"),
		managerNamespace: getenv("TELEDOCK_MANAGER_NAMESPACE"),
		apiAddr:          getenv("TELEDOCK_API_ADDR"),
		name:             getenv("TELEDOCK_NAME"),
		hostname:         getenv("TELEDOCK_HOSTNAME"),
		user:             getenv("TELEDOCK_USER"),
		server:           getenv("TELEDOCK_SERVER"),
		envDir:           getenv("TELEDOCK_ENV_DIR"),
		debug:            getenv("TELEDOCK_DEBUG") != "",
	}
	if c.token == "" {
		return c, errors.New("TELEDOCK_TOKEN is not set")
	}
	var err error
	if c.transport, err = session.ParseTransport(getenv("TELEDOCK_TRANSPORT")); err != nil {
		return c, fmt.Errorf("TELEDOCK_TRANSPORT: %w", err)
	}
	if c.kubeconfig == "" {
		c.kubeconfig = "/etc/teledock/kubeconfig"
	}
	if c.managerNamespace == "" {
		c.managerNamespace = "teledock"
	}
	if c.apiAddr == "" {
		c.apiAddr = ":7777"
	}
	if c.name == "" {
		c.name = "default"
	}
	return c, nil
}

func main() {
	if len(os.Args) > 1 {
		runTool(os.Args[1])
		return
	}
	cfg, err := configFromEnv(os.Getenv)
	level := slog.LevelInfo
	if cfg.debug {
		level = slog.LevelDebug
	}
	// The log goes to the container's stderr: `docker logs` is how the CLI shows why a connect failed.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err != nil {
		log.Error("bad configuration", "err", err)
		os.Exit(2)
	}
	if cfg.hostname == "" {
		cfg.hostname, _ = os.Hostname()
	}

	stopProfiler, err := pprofserver.Start(os.Getenv(pprofserver.Env), log)
	if err != nil {
		log.Error("bad configuration", "err", err)
		os.Exit(2)
	}
	defer stopProfiler()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = run(ctx, cfg, log)
	if cfg.envDir != "" {
		removeEnvFiles(cfg.envDir, log)
	}
	if err != nil {
		log.Error("daemon failed", "err", err)
		os.Exit(1)
	}
}

// runTool runs one of the image's other roles: the volume plugin or the copy-mode helper.
func runTool(name string) {
	level := slog.LevelInfo
	if os.Getenv("TELEDOCK_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch name {
	case "volume-plugin":
		err = runVolumePlugin(ctx, log)
	case "volume-copy":
		err = runVolumeCopy(ctx, os.Getenv, log)
	case "volume-copy-ready":
		// The copy helper's health check.
		_, err = os.Stat(podfs.ReadyFile)
	default:
		err = fmt.Errorf("unknown command %q: the daemon takes its settings from the environment", name)
	}
	if err != nil {
		log.Error(name+" failed", "err", err)
		os.Exit(1)
	}
}

// removeEnvFiles removes the *.env files directly in dir; nothing else there is touched.
func removeEnvFiles(dir string, log *slog.Logger) {
	files, err := filepath.Glob(filepath.Join(dir, "*.env"))
	if err != nil {
		return
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("removing an env file", "file", f, "err", err)
		}
	}
}

// network is what startNetwork hands back: the running TUN, netstack and DNS server, to close at
// exit, and what they report for status.
type network interface {
	io.Closer
	Info() daemon.NetworkInfo
}

// networkConfig holds the network's knobs that do not come from the cluster.
type networkConfig struct {
	namespace  string        // the connection's namespace, first in the DNS search path
	tunName    string        // name of the TUN device
	mtu        int           // MTU of the TUN device
	dnsListen  string        // where the DNS server listens inside the container's namespace
	dnsTimeout time.Duration // per-query timeout towards the cluster
	resolvConf string        // the resolv.conf that handler containers share with the daemon
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	rc, namespace, kubeContext, err := loadKubeconfig(cfg)
	if err != nil {
		return err
	}
	log.Info("starting", "version", version.Version, "context", kubeContext, "namespace", namespace,
		"manager-namespace", cfg.managerNamespace, "server", rc.Host, "transport", cfg.transport)

	sess, err := session.New(session.Config{
		ManagerNamespace: cfg.managerNamespace,
		Name:             cfg.name,
		Namespace:        namespace,
		Hostname:         cfg.hostname,
		User:             cfg.user,
		Version:          version.Version,
		DialOptions:      managerDialOptions(),
		Transport:        cfg.transport,
	}, rc, log.With("part", "session"))
	if err != nil {
		return err
	}
	// Close departs; it runs after everything that uses the session has stopped.
	defer sess.Close()

	// The intercepts deliver to 127.0.0.1 in this container's network namespace by default, which
	// handler containers share; they close (listeners, accepted connections) before the session
	// departs, and the manager ends the intercepts themselves with the session.
	icpt, err := intercept.New(intercept.Config{Namespace: namespace}, sess, log.With("part", "intercept"))
	if err != nil {
		return err
	}
	defer icpt.Close()

	server := cfg.server
	if server == "" {
		server = rc.Host
	}
	api, err := daemon.New(daemon.Config{
		ListenAddr:       cfg.apiAddr,
		Token:            cfg.token,
		Version:          version.Version,
		Name:             cfg.name,
		KubeContext:      kubeContext,
		Server:           server,
		Namespace:        namespace,
		ManagerNamespace: cfg.managerNamespace,
		AllowPeer:        hostPeers("/proc/net/route", "/etc/hosts"),
	}, sessionView{sess}, icpt, log.With("part", "api"))
	if err != nil {
		return err
	}
	log.Info("api listening", "addr", api.Addr())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var apiErr error
	wg.Go(func() { _ = sess.Run(ctx) })
	wg.Go(func() { _ = icpt.Run(ctx) })
	wg.Go(func() {
		if apiErr = api.Run(ctx); apiErr != nil {
			cancel()
		}
	})
	wg.Go(func() {
		netCfg := networkConfig{
			namespace:  namespace,
			tunName:    "teledock0",
			mtu:        netstack.DefaultMTU,
			dnsListen:  "127.0.0.1:53",
			dnsTimeout: 8 * time.Second,
			resolvConf: "/etc/resolv.conf",
		}
		runNetwork(ctx, sess, api, netCfg, log.With("part", "network"))
	})

	select {
	case <-ctx.Done():
		log.Info("stopping")
	case <-api.Quitting():
		log.Info("quitting")
	}
	cancel()
	wg.Wait()
	return apiErr
}

// runNetwork starts the network once the session first connects (routes need the cluster's
// subnets) and keeps it until ctx ends. A failure is reported through status; the session and the
// API stay up so that the CLI can show it.
func runNetwork(ctx context.Context, sess *session.Session, api *daemon.Daemon, cfg networkConfig, log *slog.Logger) {
	if err := sess.WaitConnected(ctx); err != nil {
		return
	}
	netw, err := startNetwork(ctx, sess, cfg, log)
	if err != nil {
		log.Error("network failed", "err", err)
		api.SetNetwork(nil, fmt.Errorf("network: %w", err))
		return
	}
	info := netw.Info()
	api.SetNetwork(&info, nil)
	log.Info("network ready", "dns", info.ResolverAddress)
	<-ctx.Done()
	if err := netw.Close(); err != nil {
		log.Warn("closing the network", "err", err)
	}
}

// loadKubeconfig reads the flattened kubeconfig that the launcher copied into the container.
func loadKubeconfig(cfg config) (rc *rest.Config, namespace, kubeContext string, err error) {
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: cfg.context},
	)
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, "", "", fmt.Errorf("load kubeconfig %s: %w", cfg.kubeconfig, err)
	}
	kubeContext = cfg.context
	if kubeContext == "" {
		kubeContext = raw.CurrentContext
	}
	rc, err = cc.ClientConfig()
	if err != nil {
		return nil, "", "", fmt.Errorf("kubeconfig %s: %w", cfg.kubeconfig, err)
	}
	namespace = cfg.namespace
	if namespace == "" {
		if namespace, _, err = cc.Namespace(); err != nil {
			return nil, "", "", fmt.Errorf("kubeconfig %s: namespace: %w", cfg.kubeconfig, err)
		}
	}
	return rc, namespace, kubeContext, nil
}

// sessionView adapts the session to what the daemon's API reports, and classifies its errors: this
// is the one place where session and Kubernetes errors become the API's error codes.
type sessionView struct{ s *session.Session }

func (v sessionView) Close() error { return v.s.Close() }

func (v sessionView) Info() daemon.SessionInfo {
	st := v.s.Status()
	info := daemon.SessionInfo{
		State:     string(st.State),
		ID:        st.SessionID,
		ErrorCode: errorCode(st.LastError),
		Cluster:   st.Cluster,
		Manager:   st.Manager,
	}
	if st.LastError != nil {
		info.LastError = st.LastError.Error()
	}
	if st.State == session.StateConnected {
		info.Transport = string(st.Transport)
		if st.TransportError != nil {
			info.TransportError = st.TransportError.Error()
		}
	}
	return info
}

func errorCode(err error) daemonv1.ErrorCode {
	switch {
	case err == nil:
		return daemonv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	case errors.Is(err, session.ErrNoManager):
		return daemonv1.ErrorCode_ERROR_CODE_NO_MANAGER
	case errors.Is(err, session.ErrManagerNotReady):
		return daemonv1.ErrorCode_ERROR_CODE_MANAGER_NOT_READY
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return daemonv1.ErrorCode_ERROR_CODE_CLUSTER_AUTH
	default:
		return daemonv1.ErrorCode_ERROR_CODE_UNAVAILABLE
	}
}
