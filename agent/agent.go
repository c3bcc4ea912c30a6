// Package agent runs the traffic-agent in an intercepted pod: the data path in front of the
// app's ports, the redirect that the init container installs, and the placeholder that stands
// in for a replaced container.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/agent/forward"
	"teledock.dev/teledock/agent/redirect"
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
			Name:    targetName(t),
			Network: t.Protocol.Network(),
			Listen:  ":" + strconv.Itoa(int(t.AgentPort)),
			AppPort: t.ContainerPort,
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

// Agent is the traffic-agent's long-running part.
type Agent struct {
	log *slog.Logger
	cfg agentconfig.Config
	pod Pod
	fwd *forward.Forwarder
}

// New prepares an agent for cfg. Until the manager connection exists, every flow goes to the
// app; the Router in forward.Config is where intercepts will plug in.
func New(log *slog.Logger, cfg agentconfig.Config, pod Pod) (*Agent, error) {
	if log == nil {
		return nil, errors.New("agent: nil logger")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fwd, err := forward.New(log, forward.Config{Targets: ForwardTargets(cfg)})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &Agent{log: log, cfg: cfg, pod: pod, fwd: fwd}, nil
}

// Run serves until ctx is done, then stops and waits for every connection to end.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.fwd.Start(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.log.Info("traffic-agent running", "pod", a.pod.Name, "namespace", a.pod.Namespace, "pod_ip", a.pod.IP,
		"workload", a.cfg.WorkloadKind+"/"+a.cfg.WorkloadName, "manager", a.cfg.ManagerAddress)
	<-ctx.Done()
	a.log.Info("traffic-agent stopping")
	return a.fwd.Close()
}

// Sleep is the placeholder that runs instead of a replaced app container: it does nothing
// until ctx is done. As PID 1 of its container it must handle SIGTERM itself (the kernel
// ignores unhandled signals for PID 1), which the caller's ctx does, so the pod stops at once
// instead of after its grace period.
func Sleep(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
