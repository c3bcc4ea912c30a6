package compose

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/envfile"
)

// Labels that tie what teledock adds to a project back to it.
const (
	LabelProject = "teledock.dev/compose-project"
	LabelService = "teledock.dev/compose-service" // on the daemon: "daemon"
)

// Paths inside the daemon container.
const (
	// daemonEnvDir is where the daemon sees the project's env files; it removes them when it stops,
	// so that a plain `docker compose down` leaves no pod secrets behind.
	daemonEnvDir = "/run/teledock/env"
)

// forbidden are the keys that the engine refuses, or compose-go rejects, beside
// `network_mode: service:...`, each with whether a service sets it; a marked service that sets
// them has them reset.
var forbidden = []struct {
	key  string
	sets func(types.ServiceConfig) bool
}{
	{"ports", func(s types.ServiceConfig) bool { return len(s.Ports) > 0 }},
	{"expose", func(s types.ServiceConfig) bool { return len(s.Expose) > 0 }},
	{"networks", func(s types.ServiceConfig) bool { return len(s.Networks) > 0 }},
	{"dns", func(s types.ServiceConfig) bool { return len(s.DNS) > 0 }},
	{"dns_search", func(s types.ServiceConfig) bool { return len(s.DNSSearch) > 0 }},
	{"dns_opt", func(s types.ServiceConfig) bool { return len(s.DNSOpts) > 0 }},
	{"extra_hosts", func(s types.ServiceConfig) bool { return len(s.ExtraHosts) > 0 }},
	{"hostname", func(s types.ServiceConfig) bool { return s.Hostname != "" }},
	{"domainname", func(s types.ServiceConfig) bool { return s.DomainName != "" }},
	{"links", func(s types.ServiceConfig) bool { return len(s.Links) > 0 }},
	{"external_links", func(s types.ServiceConfig) bool { return len(s.ExternalLinks) > 0 }},
	{"mac_address", func(s types.ServiceConfig) bool { return s.MacAddress != "" }},
}

// Daemon is what the daemon service needs that the project does not say.
type Daemon struct {
	Image       string
	Environment []string          // launcher.Environment: the daemon's settings
	Labels      map[string]string // launcher.Labels: how `teledock status` finds it
}

// DaemonService returns the service that runs the project's daemon.
func (plan *Plan) DaemonService(d Daemon) types.ServiceConfig {
	env := append(slices.Clone(d.Environment), "TELEDOCK_ENV_DIR="+daemonEnvDir)
	labels := types.Labels{}
	maps.Copy(labels, d.Labels)
	labels[LabelProject] = plan.Project
	labels[LabelService] = "daemon"
	svc := types.ServiceConfig{ContainerName: plan.Container, Restart: "no"}
	svc.Image = d.Image
	// NET_ADMIN for the TUN device's address and routes; nothing else, and never privileged.
	svc.CapAdd = []string{"NET_ADMIN"}
	svc.Devices = []types.DeviceMapping{{Source: "/dev/net/tun", Target: "/dev/net/tun", Permissions: "rwm"}}
	svc.Environment = types.NewMappingWithEquals(env)
	// The token is in a file of the user's, not in the override.
	svc.EnvFiles = []types.EnvFile{{Path: plan.DaemonEnv, Required: true, Format: "raw"}}
	svc.ExtraHosts = types.HostsList{launcher.HostGateway: {"host-gateway"}}
	svc.Labels = labels
	svc.Volumes = []types.ServiceVolumeConfig{
		{Type: types.VolumeTypeBind, Source: plan.Kubeconfig, Target: launcher.KubeconfigPath, ReadOnly: true},
		{Type: types.VolumeTypeBind, Source: plan.EnvDir, Target: daemonEnvDir},
	}
	// The API for the CLI, on the host's loopback only; no published port picks a free one.
	svc.Ports = []types.ServicePortConfig{{HostIP: "127.0.0.1", Target: launcher.APIPort, Protocol: "tcp", Mode: "ingress"}}
	networks := map[string][]string{}
	for _, s := range plan.Services {
		// The marked services' published ports are the daemon's: they have its network.
		svc.Ports = append(svc.Ports, s.Ports...)
		for net, aliases := range s.Networks {
			for _, a := range aliases {
				if !slices.Contains(networks[net], a) {
					networks[net] = append(networks[net], a)
				}
			}
		}
	}
	if len(networks) > 0 {
		svc.Networks = map[string]*types.ServiceNetworkConfig{}
		for net, aliases := range networks {
			slices.Sort(aliases)
			svc.Networks[net] = &types.ServiceNetworkConfig{Aliases: aliases}
		}
	}
	return svc
}

// OverrideYAML renders the sparse override file: the daemon service, and for each marked service
// what makes it join the daemon's network and import the pod's environment. compose-go's types
// render the values; the !reset and !override tags, which no type can carry, are set on the nodes.
func (plan *Plan) OverrideYAML(project *types.Project, d Daemon) ([]byte, error) {
	services := &yaml.Node{Kind: yaml.MappingNode}
	volumes := &yaml.Node{Kind: yaml.MappingNode}
	daemon := &yaml.Node{}
	if err := daemon.Encode(plan.DaemonService(d)); err != nil {
		return nil, fmt.Errorf("override: daemon service: %w", err)
	}
	addPair(services, DaemonService, daemon)

	for _, s := range plan.Services {
		node := &yaml.Node{Kind: yaml.MappingNode}
		addPair(node, "network_mode", scalar(types.NetworkModeServicePrefix+DaemonService))
		svc := project.Services[s.Name]
		for _, f := range forbidden {
			if f.sets(svc) {
				addPair(node, f.key, reset(f.key))
			}
		}
		if s.EnvFile != "" {
			// The pod's environment first: the service's own env_file entries, then its
			// environment, win over it. Not required: the daemon removes the file when it stops,
			// and `docker compose down` must still load the project then.
			files := append([]types.EnvFile{{Path: s.EnvFile, Required: false, Format: "raw"}}, s.UserEnvFiles...)
			n := &yaml.Node{}
			if err := n.Encode(files); err != nil {
				return nil, fmt.Errorf("override: service %s: env_file: %w", s.Name, err)
			}
			n.Tag = "!override"
			addPair(node, "env_file", n)
		}
		if len(s.Volumes) > 0 {
			if err := addVolumes(node, volumes, s); err != nil {
				return nil, err
			}
		}
		labels := &yaml.Node{}
		if err := labels.Encode(types.Labels{LabelProject: plan.Project, LabelService: "marked"}); err != nil {
			return nil, err
		}
		addPair(node, "labels", labels)
		addPair(services, s.Name, node)
	}

	root := &yaml.Node{Kind: yaml.MappingNode}
	addPair(root, "name", scalar(plan.Project))
	addPair(root, "services", services)
	if len(volumes.Content) > 0 {
		addPair(root, "volumes", volumes)
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root},
		HeadComment: "Written by `teledock compose` for project " + plan.Project + "; it is rewritten each time.\n" +
			"Run it after the project's own files: docker compose " + plan.fileFlags("") + " up"}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("override: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("override: %w", err)
	}
	return buf.Bytes(), nil
}

// Files are the files that run the project with the override, paths relative to dir when under
// it (absolute otherwise).
func (plan *Plan) Files(dir string) []string {
	var out []string
	for _, f := range append(slices.Clone(plan.ComposeFiles), plan.Override) {
		out = append(out, RelTo(dir, f))
	}
	return out
}

// FileFlags are Files as docker compose's -f flags.
func (plan *Plan) FileFlags(dir string) []string { return FileFlags(plan.Files(dir)) }

// FileFlags turns files into docker compose's -f flags.
func FileFlags(files []string) []string {
	var out []string
	for _, f := range files {
		out = append(out, "-f", f)
	}
	return out
}

func (plan *Plan) fileFlags(dir string) string { return strings.Join(plan.FileFlags(dir), " ") }

// reset is the !reset node for key: an empty value of the key's kind.
func reset(key string) *yaml.Node {
	switch key {
	case "networks", "extra_hosts":
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!reset", Style: yaml.FlowStyle}
	case "hostname", "domainname", "mac_address":
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!reset", Value: ""}
	}
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!reset", Style: yaml.FlowStyle}
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func addPair(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, scalar(key), v)
}

// WriteEnv writes the pod's environment for a service in compose's raw env_file format; skipped
// are the variables that format cannot hold.
func WriteEnv(path string, env map[string]string) (skipped []string, err error) {
	return envfile.Write(path, env)
}

func init() {
	// docker compose registers the raw format itself; compose-go alone does not know it, and the
	// override uses it.
	dotenv.RegisterFormat("raw", func(r io.Reader, _ string, vars map[string]string, lookup func(string) (string, bool)) error {
		env, err := envfile.Parse(r, lookup)
		if err != nil {
			return err
		}
		maps.Copy(vars, env)
		return nil
	})
}

// addVolumes mounts a service's pod volumes (which teledock made, so they are external to the
// project) and tells its code where they are, as `intercept --docker-run` does.
func addVolumes(node, volumes *yaml.Node, s Service) error {
	var mounts []types.ServiceVolumeConfig
	var paths []string
	for _, v := range s.Volumes {
		mounts = append(mounts, types.ServiceVolumeConfig{Type: types.VolumeTypeVolume, Source: v.Name, Target: v.Target, ReadOnly: v.ReadOnly})
		n := &yaml.Node{}
		if err := n.Encode(types.VolumeConfig{Name: v.Name, External: true}); err != nil {
			return err
		}
		addPair(volumes, v.Name, n)
		paths = append(paths, strings.TrimPrefix(v.Target, strings.TrimSuffix(s.MountRoot(), "/")))
	}
	n := &yaml.Node{}
	if err := n.Encode(mounts); err != nil {
		return fmt.Errorf("override: service %s: volumes: %w", s.Name, err)
	}
	addPair(node, "volumes", n)
	root, joined := s.MountRoot(), strings.Join(paths, ":")
	env := &yaml.Node{}
	if err := env.Encode(types.NewMappingWithEquals([]string{
		"TELEDOCK_ROOT=" + root, "TELEDOCK_MOUNTS=" + joined, "TELEPRESENCE_ROOT=" + root, "TELEPRESENCE_MOUNTS=" + joined,
	})); err != nil {
		return err
	}
	addPair(node, "environment", env)
	return nil
}
