package compose

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"teledock.dev/teledock/daemoncontainer/launcher"
)

// DaemonService is the service that the override adds to run the project's daemon.
const DaemonService = "teledock"

// StateDir is the folder, beside the project's compose files, that holds what teledock writes.
const StateDir = ".teledock"

// Plan is what teledock does for a project: one daemon, the services that join its network, and
// the intercepts they handle.
type Plan struct {
	Project      string
	WorkingDir   string
	ComposeFiles []string // the user's files, as loaded (an automatic compose.override.yaml included)
	Settings     Settings
	// Connection is the daemon's connection name (`teledock status --name ...`) and Container its
	// container's name.
	Connection string
	Container  string
	// Dir holds the override, the kubeconfig, the daemon's token and the env files.
	Dir        string
	Override   string
	Kubeconfig string
	DaemonEnv  string
	EnvDir     string
	Services   []Service // sorted by name
	// Notices are things the user should know that do not stop the plan.
	Notices []string
}

// Service is one marked service.
type Service struct {
	Name string
	Mark
	// EnvFile is where the pod's environment goes, when the service imports it.
	EnvFile string
	// UserEnvFiles are the service's own env_file entries; they come after EnvFile, so they win.
	UserEnvFiles []types.EnvFile
	// Ports are the service's published ports: the daemon publishes them, since the service has
	// the daemon's network.
	Ports []types.ServicePortConfig
	// Networks are the project networks the service was on, each with the names it answered to
	// there (its service name and its aliases): the daemon joins them under those names.
	Networks map[string][]string
	// Volumes are the intercept's mounts as Docker volumes, set once the intercept exists; the
	// override mounts them (external volumes) at their targets.
	Volumes []Volume
}

// Volume is one of a marked service's volumes from its intercept's pod.
type Volume struct {
	Name     string // the Docker volume
	Target   string // where the service sees it (the pod's path, under x-teledock.mount's folder)
	ReadOnly bool
}

// MountRoot is where a service's pod mounts go: "/" (the pod's paths) unless x-teledock.mount names
// a folder; "" when the service gets none (mount: false, or no intercept).
func (s Service) MountRoot() string {
	switch {
	case s.Intercept == nil || s.Mount == "false":
		return ""
	case s.Mount == "" || s.Mount == "true":
		return "/"
	}
	return s.Mount
}

// ErrPlan is what every plan error that is not about an x-teledock value wraps.
var ErrPlan = errors.New("cannot run this project with teledock")

// NewPlan reads the project's marks and checks that they can work together.
func NewPlan(p *types.Project) (*Plan, error) {
	plan := &Plan{
		Project:      p.Name,
		WorkingDir:   p.WorkingDir,
		ComposeFiles: slices.Clone(p.ComposeFiles),
		Connection:   "compose-" + p.Name,
	}
	if err := launcher.ValidateName(plan.Connection); err != nil {
		return nil, fmt.Errorf("%w: project name %q: %w", ErrPlan, p.Name, err)
	}
	plan.Container = launcher.ContainerName(plan.Connection)
	plan.Dir = filepath.Join(p.WorkingDir, StateDir, p.Name)
	plan.Override = filepath.Join(plan.Dir, "compose.teledock.yaml")
	plan.Kubeconfig = filepath.Join(plan.Dir, "kubeconfig")
	plan.DaemonEnv = filepath.Join(plan.Dir, "daemon.env")
	plan.EnvDir = filepath.Join(plan.Dir, "env")

	if err := plan.readSettings(p); err != nil {
		return nil, err
	}
	if _, taken := p.Services[DaemonService]; taken {
		return nil, fmt.Errorf("%w: the project has a service named %q, which teledock adds to run its daemon; rename that service", ErrPlan, DaemonService)
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		svc := p.Services[name]
		mark, err := readMark(name, svc.Extensions)
		if err != nil {
			return nil, plan.located(name, err)
		}
		if mark == nil {
			continue
		}
		if nm := svc.NetworkMode; nm != "" {
			return nil, fmt.Errorf("%w: service %s has network_mode %q, but a service marked with x-teledock runs in the teledock daemon's network; remove network_mode or the mark", ErrPlan, name, nm)
		}
		s := Service{Name: name, Mark: *mark, UserEnvFiles: svc.EnvFiles, Ports: svc.Ports, Networks: map[string][]string{}}
		if s.ImportEnv {
			s.EnvFile = filepath.Join(plan.EnvDir, name+".env")
		}
		for net, cfg := range svc.Networks {
			aliases := []string{name}
			if cfg != nil {
				aliases = append(aliases, cfg.Aliases...)
			}
			s.Networks[net] = aliases
		}
		if r := s.MountRoot(); r != "" && !path.IsAbs(r) {
			return nil, fmt.Errorf("%w: service %s: x-teledock.mount %q: use true, false or an absolute folder", ErrPlan, name, s.Mount)
		}
		if s.Intercept == nil && s.Mount != "" && s.Mount != "false" {
			plan.Notices = append(plan.Notices, fmt.Sprintf("service %s: x-teledock.mount: only an intercept has a pod's volumes", name))
		}
		plan.Services = append(plan.Services, s)
	}
	if len(plan.Services) == 0 {
		return nil, fmt.Errorf("%w: no service is marked; add `x-teledock: {intercept: WORKLOAD}` or `x-teledock: {connect: true}` to a service", ErrPlan)
	}
	if err := plan.checkClashes(); err != nil {
		return nil, err
	}
	return plan, nil
}

func (plan *Plan) readSettings(p *types.Project) error {
	if v, ok := p.Extensions[Extension]; ok {
		s, err := parseSettings(v)
		if err != nil {
			return plan.located("", err)
		}
		plan.Settings = s
		return nil
	}
	if v, ok := p.Extensions[TeleExtension]; ok {
		s, err := parseTeleSettings(v)
		if err != nil {
			return plan.located("", err)
		}
		plan.Settings = s
	}
	return nil
}

func readMark(service string, ext types.Extensions) (*Mark, error) {
	if v, ok := ext[Extension]; ok {
		if _, both := ext[TeleExtension]; both {
			return nil, fieldErr(Extension, "the service also has x-tele; keep one of them")
		}
		return parseMark(service, v)
	}
	if v, ok := ext[TeleExtension]; ok {
		return parseTeleMark(service, v)
	}
	return nil, nil
}

// checkClashes refuses what cannot share one network namespace: two services listening on the
// same port, or two intercepts of the same name.
func (plan *Plan) checkClashes() error {
	ports := map[string]string{} // "80/tcp" -> service
	names := map[string]string{} // intercept name -> service
	claim := func(key, svc string) error {
		if other, ok := ports[key]; ok && other != svc {
			return fmt.Errorf("%w: services %s and %s both use port %s, but marked services share the daemon's network namespace; change one of them", ErrPlan, other, svc, key)
		}
		ports[key] = svc
		return nil
	}
	for _, s := range plan.Services {
		for _, p := range s.Ports {
			if err := claim(portKey(p.Target, p.Protocol), s.Name); err != nil {
				return err
			}
		}
		ic := s.Intercept
		if ic == nil {
			continue
		}
		if other, ok := names[ic.Name]; ok {
			return fmt.Errorf("%w: services %s and %s both make an intercept named %s; give one of them x-teledock.name", ErrPlan, other, s.Name, ic.Name)
		}
		names[ic.Name] = s.Name
		if local, _, _ := strings.Cut(ic.Port, ":"); local != "" {
			n, err := strconv.ParseUint(local, 10, 16)
			if err != nil || n == 0 {
				return plan.located(s.Name, fieldErr(Extension+".port", "%q: LOCAL must be a port number", ic.Port))
			}
			if err := claim(portKey(uint32(n), "tcp"), s.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

func portKey(port uint32, proto string) string {
	if proto == "" {
		proto = "tcp"
	}
	return strconv.FormatUint(uint64(port), 10) + "/" + strings.ToLower(proto)
}

// located adds to an x-teledock error the compose file that sets the value.
func (plan *Plan) located(service string, err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	fe.Service = service
	top := strings.SplitN(fe.Key, ".", 2)[0]
	fe.File = plan.fileSetting(service, top)
	return fe
}

// fileSetting finds the last of the project's files that sets the extension (on the service, or at
// the top level); "" when none does (an included or extended file).
func (plan *Plan) fileSetting(service, ext string) string {
	found := ""
	for _, f := range plan.ComposeFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var doc map[string]any
		if yaml.Unmarshal(data, &doc) != nil {
			continue
		}
		m := doc
		if service != "" {
			services, _ := doc["services"].(map[string]any)
			m, _ = services[service].(map[string]any)
		}
		if _, ok := m[ext]; ok {
			found = f
		}
	}
	return found
}

// RelTo is path relative to dir when it lies under dir, else path itself.
func RelTo(dir, path string) string {
	if dir == "" {
		return path
	}
	rel, err := filepath.Rel(dir, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return path
	}
	return rel
}
