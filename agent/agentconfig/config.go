// Package agentconfig is the traffic-agent's configuration: the injector plans it, the
// traffic-manager stores it in the namespace's ConfigMap, and the agent reads it from its
// environment.
//
// It lives apart from the injector so that the agent binary does not link k8s.io/api.
package agentconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"sigs.k8s.io/yaml"
)

// SchemaVersion is the version of Config written by this code. Fields are only ever added, so an
// agent reads configs of its own version and older.
const SchemaVersion = 1

// Environment variables that the injector gives the agent's containers.
const (
	EnvConfig    = "TELEDOCK_AGENT_CONFIG" // the Config as JSON
	EnvPodIP     = "TELEDOCK_POD_IP"
	EnvPodName   = "TELEDOCK_POD_NAME"
	EnvNamespace = "TELEDOCK_NAMESPACE"
)

// The agent proves which pod it runs in with a ServiceAccount token that the kubelet projects into
// its container, bound to the pod and meant for the traffic-manager only (TokenAudience). The
// manager has the API server review it (TokenReview) before it lets the agent arrive.
const (
	TokenDir      = "/var/run/teledock/agent-token"
	TokenFile     = TokenDir + "/token"
	TokenAudience = "teledock-traffic-manager"
)

// The agent's health endpoint, which the injector points the agent container's readiness probe at.
const (
	// DefaultHealthPort is the health port when Config.HealthPort is 0. It sits just below the
	// injector's default first agent port (9900), from which agent ports count up, so that the two
	// do not meet.
	DefaultHealthPort = 9899
	// ReadyPath answers 200 once the agent listens on all its ports.
	ReadyPath = "/ready"
)

// ErrInvalid is wrapped by every error that Validate and Parse return for a config that is
// well-formed JSON or YAML but makes no sense.
var ErrInvalid = errors.New("invalid agent config")

// Mode says how the agent takes over a container port.
type Mode string

const (
	// ModeRename serves a service whose targetPort is symbolic: the app's container port is
	// renamed and the agent's port takes the original name, so the endpoints controller points
	// the service at the agent. It needs no privileges.
	ModeRename Mode = "rename"
	// ModeRedirect serves numeric targetPorts, headless services and annotated service-less
	// ports, whose clients connect to podIP:APP_PORT: an init container with NET_ADMIN installs
	// an nftables redirect from the app's port to the agent's.
	ModeRedirect Mode = "redirect"
)

// Protocol is a transport protocol, spelled as Kubernetes spells it.
type Protocol string

const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Network is the protocol's name for package net ("tcp", "udp").
func (p Protocol) Network() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return ""
}

// Config is the agent configuration of one workload.
type Config struct {
	Version        int      `json:"version"`
	Namespace      string   `json:"namespace"`
	WorkloadKind   string   `json:"workloadKind"` // Deployment, ReplicaSet, StatefulSet, DaemonSet
	WorkloadName   string   `json:"workloadName"`
	AgentImage     string   `json:"agentImage"`
	ManagerAddress string   `json:"managerAddress"` // host:port of the traffic-manager's agent API
	Targets        []Target `json:"targets"`
	// HealthPort is where the agent serves ReadyPath; 0 means DefaultHealthPort.
	HealthPort uint16 `json:"healthPort,omitempty"`
	// Replace names the app containers that run the agent's sleeping placeholder instead of
	// their own image while an intercept with --replace is active.
	Replace []string `json:"replace,omitempty"`
}

// Target is one port that the agent can intercept: a service port (or an annotated
// service-less container port) mapped to a container port and the agent port in front of it.
type Target struct {
	// ServiceName is empty for a container port named by the inject-container-ports annotation.
	ServiceName     string   `json:"serviceName,omitempty"`
	ServiceUID      string   `json:"serviceUID,omitempty"`
	ServicePortName string   `json:"servicePortName,omitempty"`
	ServicePort     uint16   `json:"servicePort,omitempty"`
	Protocol        Protocol `json:"protocol"`
	// TargetPort is the service port's targetPort as written: a port name or a number.
	TargetPort string `json:"targetPort,omitempty"`

	ContainerName     string `json:"containerName"`
	ContainerPortName string `json:"containerPortName,omitempty"`
	ContainerPort     uint16 `json:"containerPort"`

	AgentPort uint16 `json:"agentPort"`
	Mode      Mode   `json:"mode"`
	// RenamedPortName is the name the app's container port gets in ModeRename; the agent's
	// port takes ContainerPortName.
	RenamedPortName string `json:"renamedPortName,omitempty"`
}

// Serviceless reports whether the target has no service (an annotated container port).
func (t Target) Serviceless() bool { return t.ServiceName == "" }

// MatchesPort reports whether id identifies the target's port the way the CLI's
// --port LOCAL:ID does: the service port's name or number, or for a service-less target the
// container port's name or number. An empty id matches everything.
func (t Target) MatchesPort(id string) bool {
	if id == "" {
		return true
	}
	name, number := t.ServicePortName, t.ServicePort
	if t.Serviceless() {
		name, number = t.ContainerPortName, t.ContainerPort
	}
	return id == name || id == strconv.Itoa(int(number))
}

// Parse reads a config written as JSON or YAML and validates it. Unknown fields are ignored so
// that an older agent accepts what a newer manager writes.
func Parse(data []byte) (Config, error) {
	var c Config
	if err := yaml.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("parse agent config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// JSON is the config as compact JSON, the form the agent gets in its environment.
func (c Config) JSON() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("marshal agent config: %w", err)
	}
	return b, nil
}

// YAML is the config as YAML, the form kept in the namespace's ConfigMap for people to read.
func (c Config) YAML() ([]byte, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("marshal agent config: %w", err)
	}
	return b, nil
}

// EffectiveHealthPort is HealthPort, or DefaultHealthPort when it is not set.
func (c Config) EffectiveHealthPort() uint16 {
	if c.HealthPort == 0 {
		return DefaultHealthPort
	}
	return c.HealthPort
}

// Replaces reports whether the container runs the sleeping placeholder.
func (c Config) Replaces(container string) bool {
	for _, n := range c.Replace {
		if n == container {
			return true
		}
	}
	return false
}

// Validate checks what the injector and the agent rely on.
func (c Config) Validate() error {
	switch {
	case c.Version < 1 || c.Version > SchemaVersion:
		return fmt.Errorf("%w: version %d, want 1..%d", ErrInvalid, c.Version, SchemaVersion)
	case c.Namespace == "":
		return fmt.Errorf("%w: no namespace", ErrInvalid)
	case c.WorkloadKind == "" || c.WorkloadName == "":
		return fmt.Errorf("%w: no workload kind or name", ErrInvalid)
	case c.AgentImage == "":
		return fmt.Errorf("%w: no agent image", ErrInvalid)
	case c.ManagerAddress == "":
		return fmt.Errorf("%w: no manager address", ErrInvalid)
	case len(c.Targets) == 0:
		return fmt.Errorf("%w: no targets", ErrInvalid)
	}
	// An agent port serves exactly one container port; two targets may share it (two services
	// that reach the same container port), but they must agree on what is behind it.
	type backend struct {
		container string
		port      uint16
		proto     Protocol
	}
	agentPorts := make(map[uint16]backend)
	for i, t := range c.Targets {
		if err := t.validate(); err != nil {
			return fmt.Errorf("%w: target %d: %w", ErrInvalid, i, err)
		}
		b := backend{t.ContainerName, t.ContainerPort, t.Protocol}
		if prev, ok := agentPorts[t.AgentPort]; ok && prev != b {
			return fmt.Errorf("%w: target %d: agent port %d serves both %s:%d/%s and %s:%d/%s", ErrInvalid, i,
				t.AgentPort, prev.container, prev.port, prev.proto, b.container, b.port, b.proto)
		}
		agentPorts[t.AgentPort] = b
	}
	// The pod's containers share one network namespace: a health port that is also an agent or app
	// port would either keep the agent from starting or send the kubelet's probe to the app.
	health := c.EffectiveHealthPort()
	for i, t := range c.Targets {
		if t.AgentPort == health || t.ContainerPort == health {
			return fmt.Errorf("%w: target %d: health port %d is also an agent or container port", ErrInvalid, i, health)
		}
	}
	return nil
}

func (t Target) validate() error {
	switch {
	case t.Protocol != TCP && t.Protocol != UDP:
		return fmt.Errorf("protocol %q, want TCP or UDP", t.Protocol)
	case t.ContainerName == "":
		return errors.New("no container name")
	case t.ContainerPort == 0 || t.AgentPort == 0:
		return errors.New("container port and agent port must be set")
	case t.ContainerPort == t.AgentPort:
		return fmt.Errorf("agent port %d is the container port", t.AgentPort)
	}
	switch t.Mode {
	case ModeRedirect:
	case ModeRename:
		if t.ContainerPortName == "" || t.RenamedPortName == "" {
			return errors.New("mode rename needs containerPortName and renamedPortName")
		}
	default:
		return fmt.Errorf("mode %q, want %q or %q", t.Mode, ModeRename, ModeRedirect)
	}
	return nil
}
