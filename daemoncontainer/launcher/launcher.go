// Package launcher starts, finds and removes daemon containers with the Docker SDK, and prepares
// what they need: the kubeconfig and the connection's token.
package launcher

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Labels on daemon containers. Find reads the connection's settings back from them, so that
// `connect` can tell "already connected like this" from "connected elsewhere".
const (
	LabelName             = "teledock.dev/name"
	LabelContext          = "teledock.dev/context"
	LabelNamespace        = "teledock.dev/namespace"
	LabelManagerNamespace = "teledock.dev/manager-namespace"
	LabelServer           = "teledock.dev/server"
	LabelTransport        = "teledock.dev/transport"
	// LabelAPIPort is the container port the daemon's API listens on; its host side is a random
	// loopback port that Find reads from the port bindings.
	LabelAPIPort = "teledock.dev/api-port"
)

// APIPort is the port of the daemon's API inside the container.
const APIPort = 7777

// KubeconfigPath is where the daemon reads the kubeconfig (TELEDOCK_KUBECONFIG's default).
const KubeconfigPath = "/etc/teledock/kubeconfig"

var (
	// ErrNotFound: no daemon container for that connection name.
	ErrNotFound = errors.New("no daemon container")
	// ErrNotDaemon: a container has the daemon's name but not its labels.
	ErrNotDaemon = errors.New("container is not a teledock daemon")
	// ErrImageNotFound: the daemon image is not in the local engine.
	ErrImageNotFound = errors.New("daemon image not found")
	// ErrInvalidName: a connection name must be usable in a container name and a file name.
	ErrInvalidName = errors.New("invalid connection name")
)

// Docker is the part of the Docker SDK's client that the launcher uses; *client.Client has it.
type Docker interface {
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	CopyToContainer(ctx context.Context, containerID, dstPath string, content io.Reader, options container.CopyToContainerOptions) error
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerStop(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerLogs(ctx context.Context, container string, options container.LogsOptions) (io.ReadCloser, error)
}

// Launcher manages daemon containers.
type Launcher struct {
	docker Docker
	log    *slog.Logger
}

// New returns a launcher that uses docker, a client created with API version negotiation (the
// engine may be as old as 20.10).
func New(docker Docker, log *slog.Logger) (*Launcher, error) {
	if docker == nil {
		return nil, errors.New("launcher: nil docker client")
	}
	if log == nil {
		return nil, errors.New("launcher: nil logger")
	}
	return &Launcher{docker: docker, log: log}, nil
}

// Spec describes a daemon container to start.
type Spec struct {
	Name       string // connection name
	Image      string
	Token      string
	Kubeconfig *Kubeconfig
	// ManagerNamespace is where the traffic-manager runs.
	ManagerNamespace string
	Hostname         string // the user's host, shown in the manager's session list
	User             string // the user's login name, shown with Hostname as intercepts' owner
	// Transport is the daemon's --transport (auto, port-forward, direct); empty means auto.
	Transport string
	Env       map[string]string // extra environment, e.g. TELEDOCK_DEBUG
}

// Container is a daemon container as Find sees it.
type Container struct {
	ID    string
	Name  string
	Image string
	// State is Docker's: "created", "running", "exited", ...
	State   string
	Running bool
	// ExitCode, OOMKilled and FinishedAt tell how a container that is not running stopped.
	ExitCode   int
	OOMKilled  bool
	FinishedAt time.Time
	// APIAddr is the daemon API's address on the host ("127.0.0.1:PORT"); empty unless running.
	APIAddr string
	// APIPort is the API's port inside the container's network namespace; NetworkAddr is the
	// API's address on one of the container's Docker networks (empty without one), which
	// processes in the engine's network namespace, such as the volume plugin, reach.
	APIPort     string
	NetworkAddr string

	Connection       string
	Context          string
	Namespace        string
	ManagerNamespace string
	Server           string
	Transport        string // "" for containers started before --transport existed
}

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ValidateName checks a connection name; it becomes part of a container name and a file name.
func ValidateName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", ErrInvalidName, name)
	}
	return nil
}

// ContainerName is the daemon container's name for a connection.
func ContainerName(connection string) string { return "teledock-daemon-" + connection }

// Start creates the daemon container, copies the kubeconfig into it and starts it. It removes the
// container again when any step fails. It does not wait for the daemon to connect.
func (l *Launcher) Start(ctx context.Context, spec Spec) (_ *Container, err error) {
	if err := ValidateName(spec.Name); err != nil {
		return nil, err
	}
	if spec.Kubeconfig == nil || spec.Token == "" || spec.Image == "" {
		return nil, errors.New("launcher: spec needs a kubeconfig, a token and an image")
	}
	name := ContainerName(spec.Name)
	cfg, host := containerConfig(spec)
	created, err := l.docker.ContainerCreate(ctx, cfg, host, nil, nil, name)
	switch {
	case cerrdefs.IsNotFound(err):
		return nil, fmt.Errorf("%w: %s: %w", ErrImageNotFound, spec.Image, err)
	case err != nil:
		return nil, fmt.Errorf("create container %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			// Nothing may be left behind; the caller's ctx may be what failed, so use a fresh one.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := l.docker.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true}); rerr != nil && !cerrdefs.IsNotFound(rerr) {
				l.log.Warn("removing a container that failed to start", "container", name, "err", rerr)
			}
		}
	}()

	// The kubeconfig goes in before start rather than through a bind mount: a temporary file on the
	// host could vanish while the container still needs it (restarts, `docker start`).
	archive, err := kubeconfigArchive(spec.Kubeconfig.Data)
	if err != nil {
		return nil, err
	}
	if err := l.docker.CopyToContainer(ctx, created.ID, "/", archive, container.CopyToContainerOptions{}); err != nil {
		return nil, fmt.Errorf("copy kubeconfig into %s: %w", name, err)
	}
	if err := l.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return nil, fmt.Errorf("start container %s: %w", name, err)
	}
	c, err := l.inspect(ctx, created.ID)
	if err != nil {
		return nil, err
	}
	l.log.Debug("daemon container started", "container", name, "id", c.ID, "api", c.APIAddr)
	return c, nil
}

// Environment is the daemon's configuration as environment variables, without the token (which
// Start adds, and compose projects pass in an env file).
func Environment(spec Spec) []string {
	kc := spec.Kubeconfig
	env := []string{
		"TELEDOCK_KUBECONFIG=" + KubeconfigPath,
		"TELEDOCK_CONTEXT=" + kc.Context,
		"TELEDOCK_NAMESPACE=" + kc.Namespace,
		"TELEDOCK_MANAGER_NAMESPACE=" + spec.ManagerNamespace,
		"TELEDOCK_API_ADDR=:" + strconv.Itoa(APIPort),
		"TELEDOCK_NAME=" + spec.Name,
		"TELEDOCK_HOSTNAME=" + spec.Hostname,
		"TELEDOCK_USER=" + spec.User,
		"TELEDOCK_SERVER=" + kc.Server,
		"TELEDOCK_TRANSPORT=" + spec.Transport,
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, k+"="+spec.Env[k])
	}
	return env
}

// Labels are the daemon container's labels; Find reads the connection's settings back from them.
func Labels(spec Spec) map[string]string {
	kc := spec.Kubeconfig
	return map[string]string{
		LabelName:             spec.Name,
		LabelContext:          kc.Context,
		LabelNamespace:        kc.Namespace,
		LabelManagerNamespace: spec.ManagerNamespace,
		LabelServer:           kc.Server,
		LabelTransport:        spec.Transport,
		LabelAPIPort:          strconv.Itoa(APIPort),
	}
}

func containerConfig(spec Spec) (*container.Config, *container.HostConfig) {
	apiPort := nat.Port(strconv.Itoa(APIPort) + "/tcp")
	cfg := &container.Config{
		Image:        spec.Image,
		Env:          append([]string{"TELEDOCK_TOKEN=" + spec.Token}, Environment(spec)...),
		Labels:       Labels(spec),
		ExposedPorts: nat.PortSet{apiPort: {}},
	}
	host := &container.HostConfig{
		// NET_ADMIN for the TUN device's address and routes; nothing else, and never privileged.
		CapAdd: []string{"NET_ADMIN"},
		Resources: container.Resources{Devices: []container.DeviceMapping{{
			PathOnHost: "/dev/net/tun", PathInContainer: "/dev/net/tun", CgroupPermissions: "rwm",
		}}},
		ExtraHosts: []string{HostGateway + ":host-gateway"},
		// Loopback only: the API is for the CLI on this host. An empty HostPort picks a free port.
		PortBindings:  nat.PortMap{apiPort: {{HostIP: "127.0.0.1", HostPort: ""}}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	return cfg, host
}

// kubeconfigArchive is a tar stream, relative to /, holding the kubeconfig readable by root only.
// The directories are included because a FROM-scratch image may not have them.
func kubeconfigArchive(data []byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, dir := range []string{"etc/", "etc/teledock/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: now}); err != nil {
			return nil, fmt.Errorf("kubeconfig archive: %w", err)
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: KubeconfigPath[1:], Mode: 0o600, Size: int64(len(data)), ModTime: now}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("kubeconfig archive: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return nil, fmt.Errorf("kubeconfig archive: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("kubeconfig archive: %w", err)
	}
	return &buf, nil
}

// Find returns the daemon container of a connection, or an error wrapping ErrNotFound.
func (l *Launcher) Find(ctx context.Context, connection string) (*Container, error) {
	if err := ValidateName(connection); err != nil {
		return nil, err
	}
	return l.inspect(ctx, ContainerName(connection))
}

func (l *Launcher) inspect(ctx context.Context, nameOrID string) (*Container, error) {
	info, err := l.docker.ContainerInspect(ctx, nameOrID)
	switch {
	case cerrdefs.IsNotFound(err):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, nameOrID)
	case err != nil:
		return nil, fmt.Errorf("inspect container %s: %w", nameOrID, err)
	}
	return containerFromInspect(info)
}

func containerFromInspect(info container.InspectResponse) (*Container, error) {
	name := info.Name
	if len(name) > 0 && name[0] == '/' {
		name = name[1:]
	}
	var labels map[string]string
	if info.Config != nil {
		labels = info.Config.Labels
	}
	if _, ok := labels[LabelName]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotDaemon, name)
	}
	c := &Container{
		ID:               info.ID,
		Name:             name,
		Connection:       labels[LabelName],
		Context:          labels[LabelContext],
		Namespace:        labels[LabelNamespace],
		ManagerNamespace: labels[LabelManagerNamespace],
		Server:           labels[LabelServer],
		Transport:        labels[LabelTransport],
	}
	if info.Config != nil {
		c.Image = info.Config.Image
	}
	if info.State != nil {
		c.State = string(info.State.Status)
		c.Running = info.State.Running
		if !c.Running {
			c.ExitCode, c.OOMKilled = info.State.ExitCode, info.State.OOMKilled
			// Docker's zero time ("0001-01-01T00:00:00Z") for a container that never ran parses too.
			c.FinishedAt, _ = time.Parse(time.RFC3339Nano, info.State.FinishedAt)
		}
	}
	port := labels[LabelAPIPort]
	if port == "" {
		port = strconv.Itoa(APIPort)
	}
	c.APIPort = port
	if c.Running && info.NetworkSettings != nil {
		for _, n := range info.NetworkSettings.Networks {
			if n != nil && n.IPAddress != "" {
				c.NetworkAddr = net.JoinHostPort(n.IPAddress, port)
				break
			}
		}
		for _, b := range info.NetworkSettings.Ports[nat.Port(port+"/tcp")] {
			if b.HostPort != "" {
				ip := b.HostIP
				if ip == "" || ip == "0.0.0.0" {
					ip = "127.0.0.1"
				}
				c.APIAddr = net.JoinHostPort(ip, b.HostPort)
				break
			}
		}
	}
	return c, nil
}

// Remove stops and removes a connection's daemon container. A container that is already gone is
// not an error. Stopping first (SIGTERM) lets the daemon depart from the manager.
func (l *Launcher) Remove(ctx context.Context, connection string) error {
	c, err := l.Find(ctx, connection)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	timeout := 5
	if err := l.docker.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &timeout}); err != nil && !cerrdefs.IsNotFound(err) {
		l.log.Debug("stop failed; removing by force", "container", c.Name, "err", err)
	}
	err = l.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	// Conflict: another removal is already in progress, which is what we want.
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("remove container %s: %w", c.Name, err)
	}
	return nil
}

// Logs returns the last lines of a daemon container's log, for messages about failed connects.
func (l *Launcher) Logs(ctx context.Context, connection string, lines int) (string, error) {
	rc, err := l.docker.ContainerLogs(ctx, ContainerName(connection), container.LogsOptions{
		ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lines),
	})
	if err != nil {
		return "", fmt.Errorf("logs of %s: %w", ContainerName(connection), err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	// The daemon runs without a TTY, so Docker multiplexes stdout and stderr in one stream.
	if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
		return buf.String(), fmt.Errorf("logs of %s: %w", ContainerName(connection), err)
	}
	return buf.String(), nil
}
