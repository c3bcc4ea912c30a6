// Package agent runs the traffic-agent in an intercepted pod: the data path in front of the
// app's ports and its session with the traffic-manager, the redirect that the init container
// installs, and the placeholder that stands in for a replaced container.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/agent/forward"
	"teledock.dev/teledock/agent/intercept"
	"teledock.dev/teledock/agent/redirect"
	"teledock.dev/teledock/agent/session"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// DefaultConfigSource is where the injector puts the config: in the container's environment.
const DefaultConfigSource = "env:" + agentconfig.EnvConfig

// ErrNoConfig means the config source is empty.
var ErrNoConfig = errors.New("no agent config")

// LoadConfig reads the config from source: "env:NAME" reads the variable NAME through getenv,
// anything else is a file path read through readFile.
func LoadConfig(source string, getenv func(string) string, readFile func(string) ([]byte, error)) (agentconfig.Config, error) {
	var data []byte
	if name, ok := strings.CutPrefix(source, "env:"); ok {
		data = []byte(getenv(name))
		if len(data) == 0 {
			return agentconfig.Config{}, fmt.Errorf("%w: environment variable %s is empty", ErrNoConfig, name)
		}
	} else {
		var err error
		if data, err = readFile(source); err != nil {
			return agentconfig.Config{}, fmt.Errorf("read agent config: %w", err)
		}
	}
	return agentconfig.Parse(data)
}

// Pod is what the agent knows of its own pod, from the downward API.
type Pod struct {
	Name      string
	Namespace string
	IP        string
}

// PodFromEnv reads the variables that the injector sets from the downward API.
func PodFromEnv(getenv func(string) string) Pod {
	return Pod{
		Name:      getenv(agentconfig.EnvPodName),
		Namespace: getenv(agentconfig.EnvNamespace),
		IP:        getenv(agentconfig.EnvPodIP),
	}
}

// ForwardTargets gives one forwarding target per agent port, listening on every address of
// the pod and forwarding to the container port behind it.
func ForwardTargets(cfg agentconfig.Config) []forward.Target {
	var out []forward.Target
	seen := make(map[uint16]bool)
	for _, t := range cfg.Targets {
		if seen[t.AgentPort] {
			continue
		}
		seen[t.AgentPort] = true
		out = append(out, forward.Target{
			Name:      targetName(t),
			Network:   t.Protocol.Network(),
			Listen:    ":" + strconv.Itoa(int(t.AgentPort)),
			AppPort:   t.ContainerPort,
			AgentPort: t.AgentPort,
		})
	}
	return out
}

// targetName names a target in logs after its container port: "app/http" or "app/8080".
func targetName(t agentconfig.Target) string {
	return t.ContainerName + "/" + cmp.Or(t.ContainerPortName, strconv.Itoa(int(t.ContainerPort)))
}

// RedirectRules are the nftables redirects that the redirect-mode targets need, one per
// container port and protocol, sorted.
func RedirectRules(cfg agentconfig.Config) []redirect.Redirect {
	var out []redirect.Redirect
	for _, t := range cfg.Targets {
		if t.Mode != agentconfig.ModeRedirect {
			continue
		}
		r := redirect.Redirect{Protocol: t.Protocol.Network(), AppPort: t.ContainerPort, AgentPort: t.AgentPort}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b redirect.Redirect) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.AppPort, b.AppPort))
	})
	return out
}

// InstallRedirects is the init container's work: install the config's redirects with install
// (redirect.Install in production).
func InstallRedirects(log *slog.Logger, cfg agentconfig.Config, install func([]redirect.Redirect) error) error {
	rules := RedirectRules(cfg)
	if len(rules) == 0 {
		// The injector adds the init container only when a target needs it; a config that
		// changed since is not worth failing the pod over.
		log.Info("no redirects needed")
		return nil
	}
	if err := install(rules); err != nil {
		return fmt.Errorf("install redirects: %w", err)
	}
	for _, r := range rules {
		log.Info("redirect installed", "rule", r.String())
	}
	return nil
}

// Options are the agent's dependencies that tests replace; the zero value is what a pod uses.
type Options struct {
	// DialManager connects to the manager's address; nil dials TCP.
	DialManager func(ctx context.Context, addr string) (net.Conn, error)
	// Version is the agent's version, reported to the manager.
	Version string
	// MaxBackoff is the longest wait between attempts to reach the manager; 0 means
	// session.DefaultMaxBackoff.
	MaxBackoff time.Duration
	// TokenFile is the pod-bound ServiceAccount token the agent shows the manager
	// (agentconfig.TokenFile in a pod); empty shows none.
	TokenFile string
	// Mounts are the intercepted containers' volumes that the injector mounted into the agent;
	// the agent serves them over SFTP at VolumesAddr.
	Mounts []agentconfig.Mount
	// VolumesAddr is where they are served; empty means 127.0.0.1:agentconfig.VolumesPort.
	VolumesAddr string
}

// Agent is the traffic-agent's long-running part: the forwarder on the agent ports, the
// session with the traffic-manager that switches their routes, and the health endpoint.
// New → Run → Close.
type Agent struct {
	log    *slog.Logger
	cfg    agentconfig.Config
	pod    Pod
	conn   *grpc.ClientConn
	fwd    *forward.Forwarder
	router *intercept.Router
	mgr    managerv1.ManagerClient
	toPod  *intercept.ToPod
	sess   *session.Session
	ready  readiness

	mounts      []agentconfig.Mount
	volumesAddr string

	mu      sync.Mutex // guards running
	running bool

	closeOnce sync.Once
}

// New prepares an agent for cfg; nothing listens or dials until Run. Flows go to the app until
// the manager says a target is intercepted, and whenever the manager cannot be reached.
func New(log *slog.Logger, cfg agentconfig.Config, pod Pod, opts Options) (*Agent, error) {
	if log == nil {
		return nil, errors.New("agent: nil logger")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	podIP, err := netip.ParseAddr(pod.IP)
	if err != nil {
		// Only what the developer is told about intercepted connections depends on it.
		log.Warn("no pod IP in the environment; intercepted connections report 0.0.0.0", "env", agentconfig.EnvPodIP)
	}
	maxBackoff := cmp.Or(opts.MaxBackoff, session.DefaultMaxBackoff)
	dialOpts := append(tunnel.DialOptions(),
		// The manager is a Service inside the cluster; the connection never leaves it.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's default reconnect backoff grows to two minutes; an agent should find a
		// restarted manager within seconds, as its intercepts depend on it.
		// A connect inside the cluster takes milliseconds; one that hangs is a SYN to a pod that
		// is gone (kube-proxy still sends the Service's traffic there for a moment after the
		// manager's pod was replaced). With gRPC's 20 s, or the 10 s this had, the agent found a
		// restarted manager ~10 s after the daemon did (e2e TestManagerRestartKeepsIntercepts).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: session.DefaultMinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if opts.DialManager != nil {
		dialOpts = append(dialOpts, grpc.WithContextDialer(opts.DialManager))
	}
	// passthrough hands the Service's name to the dialer at every connect, so that the name is
	// resolved again after a failure rather than pinned by gRPC's resolver.
	conn, err := grpc.NewClient("passthrough:///"+cfg.ManagerAddress, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("agent: manager client: %w", err)
	}
	a, err := build(log, cfg, pod, podIP, conn, opts, maxBackoff)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return a, nil
}

func build(log *slog.Logger, cfg agentconfig.Config, pod Pod, podIP netip.Addr, conn *grpc.ClientConn, opts Options, maxBackoff time.Duration) (*Agent, error) {
	mgr := managerv1.NewManagerClient(conn)
	router, err := intercept.NewRouter(log, mgr, forward.App("127.0.0.1"), podIP)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	fwd, err := forward.New(log, forward.Config{Targets: ForwardTargets(cfg), Router: router.Route})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	toPod, err := intercept.NewToPod(log, mgr, (&net.Dialer{}).DialContext)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	info := &managerv1.AgentInfo{
		PodName:      pod.Name,
		Namespace:    cmp.Or(pod.Namespace, cfg.Namespace),
		PodIp:        pod.IP,
		WorkloadKind: cfg.WorkloadKind,
		WorkloadName: cfg.WorkloadName,
		Version:      opts.Version,
		Capabilities: intercept.Capabilities(),
	}
	sess, err := session.New(session.Config{Info: info, MaxBackoff: maxBackoff, TokenFile: opts.TokenFile}, mgr, handler{router, toPod}, log)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &Agent{log: log, cfg: cfg, pod: pod, conn: conn, fwd: fwd, router: router, mgr: mgr, toPod: toPod, sess: sess,
		mounts: opts.Mounts, volumesAddr: cmp.Or(opts.VolumesAddr, volumesAddr())}, nil
}

// handler passes what the manager says to the router and the --to-pod acceptor.
type handler struct {
	router *intercept.Router
	toPod  *intercept.ToPod
}

func (h handler) Targets(session string, targets []*managerv1.AgentTarget) {
	h.router.Set(session, targets)
}
func (h handler) Dial(session string, d *managerv1.IncomingDial) { h.toPod.Accept(session, d) }
func (h handler) Lost()                                          { h.router.Reset() }

var _ session.Handler = handler{}

// Run listens on the agent ports and the health port, keeps the session with the manager, and
// serves until ctx is done; then it departs, stops, and waits for every connection to end. Run
// may be called once.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.running {
		a.mu.Unlock()
		return errors.New("agent: Run called twice")
	}
	a.running = true
	a.mu.Unlock()
	defer a.Close()

	if err := a.fwd.Start(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	health, err := a.serveHealth(":" + strconv.Itoa(int(a.cfg.EffectiveHealthPort())))
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer health.stop()
	vols := serveVolumes(a.log, a.mounts, a.volumesAddr)
	defer vols.close()
	a.ready.set(true)
	a.log.Info("traffic-agent running", "pod", a.pod.Name, "namespace", a.pod.Namespace, "pod_ip", a.pod.IP,
		"workload", a.cfg.WorkloadKind+"/"+a.cfg.WorkloadName, "manager", a.cfg.ManagerAddress, "health", health.addr)

	sessDone := make(chan struct{})
	go func() {
		defer close(sessDone)
		_ = a.sess.Run(ctx) // returns once ctx ends, after departing
	}()
	reportsDone := make(chan struct{})
	go func() {
		defer close(reportsDone)
		_ = intercept.Reports(ctx, intercept.ReportConfig{Log: a.log, Manager: a.mgr, Router: a.router})
	}()
	<-ctx.Done()
	a.log.Info("traffic-agent stopping")
	a.ready.set(false)
	<-sessDone
	<-reportsDone
	return nil
}

// Close stops the --to-pod connections, the forwarder and the manager connection, and waits for
// their goroutines. Run calls it on its way out; it may be called more than once.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		a.toPod.Close()
		a.fwd.Close()
		a.conn.Close()
	})
	return nil
}

// Sleep is the placeholder that runs instead of a replaced app container: it does nothing
// until ctx is done. As PID 1 of its container it must handle SIGTERM itself (the kernel
// ignores unhandled signals for PID 1), which the caller's ctx does, so the pod stops at once
// instead of after its grace period.
func Sleep(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
