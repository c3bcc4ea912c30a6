// Package mounts gives an intercept's volume mounts to the local containers as Docker volumes, one
// per mount of the intercepted container: live through teledock's volume plugin (plugin mode), or
// copied and refreshed by a helper container (copy mode) where the plugin cannot run.
package mounts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Mode is how the volumes are made.
type Mode string

const (
	Auto   Mode = "auto"   // the plugin, else copy
	Plugin Mode = "plugin" // live: reads and writes go to the pod
	Copy   Mode = "copy"   // a copy refreshed every few seconds; writes stay local
)

// ParseMode reads --mount-mode; empty is auto.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return Auto, nil
	}
	switch m := Mode(s); m {
	case Auto, Plugin, Copy:
		return m, nil
	}
	return "", fmt.Errorf("--mount-mode %q: use auto, plugin or copy", s)
}

// Labels on what this package creates.
const (
	LabelConnection = "teledock.dev/connection"
	LabelIntercept  = "teledock.dev/intercept"
	LabelPath       = "teledock.dev/mount-path" // the pod path a volume stands for
	LabelReadOnly   = "teledock.dev/mount-readonly"
	LabelMode       = "teledock.dev/mount-mode"
)

// Docker is what the package needs of the Docker SDK's client.
type Docker interface {
	VolumeCreate(ctx context.Context, options volume.CreateOptions) (volume.Volume, error)
	VolumeList(ctx context.Context, options volume.ListOptions) (volume.ListResponse, error)
	VolumeRemove(ctx context.Context, volumeID string, force bool) error
	PluginInspectWithRaw(ctx context.Context, name string) (*types.Plugin, []byte, error)
	PluginCreate(ctx context.Context, createContext io.Reader, options types.PluginCreateOptions) error
	PluginEnable(ctx context.Context, name string, options types.PluginEnableOptions) error
	PluginDisable(ctx context.Context, name string, options types.PluginDisableOptions) error
	PluginRemove(ctx context.Context, name string, options types.PluginRemoveOptions) error
	PluginList(ctx context.Context, filter filters.Args) (types.PluginsListResponse, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, container string, options container.StartOptions) error
	ContainerInspect(ctx context.Context, container string) (container.InspectResponse, error)
	ContainerRemove(ctx context.Context, container string, options container.RemoveOptions) error
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerExport(ctx context.Context, container string) (io.ReadCloser, error)
	ContainerLogs(ctx context.Context, container string, options container.LogsOptions) (io.ReadCloser, error)
}

var _ Docker = (*client.Client)(nil)

// Mount is one mount of the intercepted container.
type Mount struct {
	Path     string // where the container sees it
	SFTPPath string // where the agent serves it
	ReadOnly bool
}

// Config is one intercept's volumes.
type Config struct {
	Connection string
	Intercept  string
	Mounts     []Mount
	Mode       Mode
	ReadOnly   bool // --mount-readonly: every volume read-only, whatever the pod does

	Token string
	// DaemonContainer is the daemon's container (ID or name); DaemonAPIPort its API port inside
	// its network namespace (for the copy helper, which joins it); DaemonNetworkAddr the API on a
	// Docker network (for the plugin, which runs in the engine's network namespace).
	DaemonContainer   string
	DaemonAPIPort     string
	DaemonNetworkAddr string
	Image             string // teledock/daemon:VERSION: the plugin's rootfs and the copy helper
	PluginName        string // teledock/volumes:VERSION
}

// Volume is a Docker volume made for one mount.
type Volume struct {
	Name     string `json:"name"`
	Path     string `json:"path"` // the pod path
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Result is what Create made.
type Result struct {
	Mode    Mode
	Volumes []Volume
	// Notice says why auto mode chose copy; empty otherwise.
	Notice string
}

// VolumeName is the Docker volume of a connection's intercept's i-th mount.
func VolumeName(connection, intercept string, i int) string {
	return fmt.Sprintf("teledock-%s-%s-%d", connection, intercept, i)
}

// helperName is the copy helper's container.
func helperName(connection, intercept string) string {
	return fmt.Sprintf("teledock-volumes-%s-%s", connection, intercept)
}

// Create makes the volumes of one intercept, replacing what an earlier run left. On error it
// leaves nothing behind.
func Create(ctx context.Context, docker Docker, cfg Config, log *slog.Logger) (*Result, error) {
	if len(cfg.Mounts) == 0 {
		return nil, errors.New("the intercepted container has no volume mounts that its traffic-agent serves")
	}
	if res := reusable(ctx, docker, cfg); res != nil {
		return res, nil
	}
	if err := Remove(ctx, docker, cfg.Connection, cfg.Intercept); err != nil {
		return nil, err
	}
	res := &Result{Mode: cfg.Mode}
	if cfg.Mode == Auto || cfg.Mode == Plugin {
		err := EnsurePlugin(ctx, docker, cfg.PluginName, cfg.Image, log)
		switch {
		case err == nil:
			res.Mode = Plugin
		case cfg.Mode == Plugin:
			return nil, fmt.Errorf("volume plugin: %w", err)
		default:
			log.Debug("volume plugin unavailable", "err", err)
			res.Mode = Copy
			res.Notice = fmt.Sprintf("The volume plugin cannot run here (%v); the mounts are copies, refreshed every few seconds, and writes stay local.", err)
		}
	}
	var err error
	if res.Mode == Plugin {
		res.Volumes, err = createPluginVolumes(ctx, docker, cfg)
	} else {
		res.Volumes, err = createCopies(ctx, docker, cfg, log)
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := Remove(rctx, docker, cfg.Connection, cfg.Intercept); rerr != nil {
			log.Warn("removing the volumes of a failed mount", "err", rerr)
		}
		return nil, err
	}
	return res, nil
}

// reusable returns the plugin volumes of the intercept that an earlier run made with the same
// options, if all are there: running containers (a compose project brought up again) keep them.
func reusable(ctx context.Context, docker Docker, cfg Config) *Result {
	if cfg.Mode == Copy || cfg.DaemonNetworkAddr == "" {
		return nil
	}
	f := filters.NewArgs(filters.Arg("label", LabelConnection+"="+cfg.Connection), filters.Arg("label", LabelIntercept+"="+cfg.Intercept))
	resp, err := docker.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil || len(resp.Volumes) != len(cfg.Mounts) {
		return nil
	}
	have := map[string]*volume.Volume{}
	for _, v := range resp.Volumes {
		have[v.Name] = v
	}
	res := &Result{Mode: Plugin}
	for i, m := range cfg.Mounts {
		ro := m.ReadOnly || cfg.ReadOnly
		v := have[VolumeName(cfg.Connection, cfg.Intercept, i)]
		if v == nil || v.Driver != cfg.PluginName || !maps.Equal(v.Options, cfg.pluginOptions(m, ro)) || !maps.Equal(v.Labels, cfg.labels(m, ro, Plugin)) {
			return nil
		}
		res.Volumes = append(res.Volumes, Volume{Name: v.Name, Path: m.Path, ReadOnly: ro})
	}
	return res
}

func (cfg Config) pluginOptions(m Mount, ro bool) map[string]string {
	return map[string]string{
		"daemon": cfg.DaemonNetworkAddr, "token": cfg.Token, "intercept": cfg.Intercept,
		"path": m.SFTPPath, "readonly": strconv.FormatBool(ro),
	}
}

func (cfg Config) labels(m Mount, ro bool, mode Mode) map[string]string {
	return map[string]string{
		LabelConnection: cfg.Connection,
		LabelIntercept:  cfg.Intercept,
		LabelPath:       m.Path,
		LabelReadOnly:   strconv.FormatBool(ro),
		LabelMode:       string(mode),
	}
}

func createPluginVolumes(ctx context.Context, docker Docker, cfg Config) ([]Volume, error) {
	if cfg.DaemonNetworkAddr == "" {
		return nil, errors.New("the daemon container has no address on a Docker network for the volume plugin to reach")
	}
	var out []Volume
	for i, m := range cfg.Mounts {
		ro := m.ReadOnly || cfg.ReadOnly
		v, err := docker.VolumeCreate(ctx, volume.CreateOptions{
			Name:       VolumeName(cfg.Connection, cfg.Intercept, i),
			Driver:     cfg.PluginName,
			DriverOpts: cfg.pluginOptions(m, ro),
			Labels:     cfg.labels(m, ro, Plugin),
		})
		if err != nil {
			return nil, fmt.Errorf("create volume for %s: %w", m.Path, err)
		}
		out = append(out, Volume{Name: v.Name, Path: m.Path, ReadOnly: ro})
	}
	return out, nil
}

// List returns the volumes of a connection's intercept, in mount order.
func List(ctx context.Context, docker Docker, connection, intercept string) ([]Volume, error) {
	f := filters.NewArgs(filters.Arg("label", LabelConnection+"="+connection))
	if intercept != "" {
		f.Add("label", LabelIntercept+"="+intercept)
	}
	resp, err := docker.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var out []Volume
	for _, v := range resp.Volumes {
		ro, _ := strconv.ParseBool(v.Labels[LabelReadOnly])
		out = append(out, Volume{Name: v.Name, Path: v.Labels[LabelPath], ReadOnly: ro})
	}
	sort.Slice(out, func(i, j int) bool { return volumeIndex(out[i].Name) < volumeIndex(out[j].Name) })
	return out, nil
}

func volumeIndex(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
	return n
}

// Remove removes the volumes and the copy helper of a connection's intercept (of all its
// intercepts when intercept is ""). A volume that a container still uses is retried for a while:
// a handler run with --rm is removed by the engine just after it exits.
func Remove(ctx context.Context, docker Docker, connection, intercept string) error {
	f := filters.NewArgs(filters.Arg("label", LabelConnection+"="+connection), filters.Arg("label", LabelMode+"="+string(Copy)))
	if intercept != "" {
		f.Add("label", LabelIntercept+"="+intercept)
	}
	helpers, err := docker.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return fmt.Errorf("list volume helpers: %w", err)
	}
	var errs []error
	for _, h := range helpers {
		if err := docker.ContainerRemove(ctx, h.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove volume helper: %w", err))
		}
	}
	vols, err := List(ctx, docker, connection, intercept)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	// One deadline for all: a container that keeps using them should not cost 10 s per volume.
	deadline := time.Now().Add(10 * time.Second)
	for _, v := range vols {
		if err := removeVolume(ctx, docker, v.Name, deadline); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeVolume(ctx context.Context, docker Docker, name string, deadline time.Time) error {
	for {
		err := docker.VolumeRemove(ctx, name, false)
		switch {
		case err == nil || cerrdefs.IsNotFound(err):
			return nil
		case !cerrdefs.IsConflict(err) || time.Now().After(deadline):
			return fmt.Errorf("remove volume %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove volume %s: %w", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// RunFlags are the docker run flags that give a container the volumes under root ("/" for the pod's
// own paths), and the environment that tells the code where they are.
func RunFlags(vols []Volume, root string) []string {
	var flags, paths []string
	for _, v := range vols {
		target := path.Join(root, v.Path)
		spec := v.Name + ":" + target
		if v.ReadOnly {
			spec += ":ro"
		}
		flags = append(flags, "-v", spec)
		paths = append(paths, v.Path)
	}
	mounts := strings.Join(paths, ":")
	return append(flags,
		"-e", "TELEDOCK_ROOT="+root, "-e", "TELEDOCK_MOUNTS="+mounts,
		"-e", "TELEPRESENCE_ROOT="+root, "-e", "TELEPRESENCE_MOUNTS="+mounts)
}
