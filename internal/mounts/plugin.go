package mounts

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
)

// PluginPrefix names teledock's plugins: teledock/volumes:VERSION.
const PluginPrefix = "teledock/volumes"

// pluginConfig is the managed plugin's config.json. CAP_SYS_ADMIN and /dev/fuse are what a FUSE
// mount needs; the engine grants a plugin its default capabilities plus only those listed, so this
// works where `--privileged` is refused. The network is the host's, to reach daemon containers.
func pluginConfig() ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"description":     "teledock: the volumes of intercepted Kubernetes pods",
		"documentation":   "https://teledock.dev/docs/volumes",
		"entrypoint":      []string{"/teledock-daemon", "volume-plugin"},
		"interface":       map[string]any{"socket": "teledock.sock", "types": []string{"docker.volumedriver/1.0"}},
		"network":         map[string]any{"type": "host"},
		"propagatedmount": "/mnt/volumes",
		"linux": map[string]any{
			"capabilities": []string{"CAP_SYS_ADMIN"},
			"devices":      []map[string]string{{"path": "/dev/fuse"}},
		},
		"env": []map[string]any{{"name": "TELEDOCK_DEBUG", "settable": []string{"value"}, "value": ""}},
	}, "", "  ")
}

// EnsurePlugin installs (from image's filesystem, no registry) and enables the plugin name, unless
// it is already enabled. A plugin that fails to enable is removed again.
func EnsurePlugin(ctx context.Context, docker Docker, name, image string, log *slog.Logger) error {
	p, _, err := docker.PluginInspectWithRaw(ctx, name)
	switch {
	case err == nil && p.Enabled:
		return nil
	case err == nil:
		return enable(ctx, docker, name)
	case !cerrdefs.IsNotFound(err):
		return fmt.Errorf("inspect plugin %s: %w", name, err)
	}
	log.Debug("installing the volume plugin", "plugin", name, "image", image)
	if err := create(ctx, docker, name, image); err != nil {
		// Another teledock may have installed it meanwhile (two first intercepts at once).
		if p, _, ierr := docker.PluginInspectWithRaw(ctx, name); ierr == nil {
			if p.Enabled {
				return nil
			}
			return enable(ctx, docker, name)
		}
		return err
	}
	if err := enable(ctx, docker, name); err != nil {
		_ = docker.PluginRemove(context.WithoutCancel(ctx), name, types.PluginRemoveOptions{Force: true})
		return err
	}
	return nil
}

func enable(ctx context.Context, docker Docker, name string) error {
	if err := docker.PluginEnable(ctx, name, types.PluginEnableOptions{Timeout: 30}); err != nil {
		return fmt.Errorf("enable plugin %s: %w", name, err)
	}
	return nil
}

// create makes the plugin from the image's filesystem: the engine's plugin create takes a tar of
// config.json and rootfs/.
func create(ctx context.Context, docker Docker, name, image string) error {
	c, err := docker.ContainerCreate(ctx, &container.Config{Image: image, Labels: map[string]string{LabelMode: "plugin-rootfs"}}, nil, nil, nil, "")
	if err != nil {
		return fmt.Errorf("volume plugin from %s: %w", image, err)
	}
	defer func() {
		_ = docker.ContainerRemove(context.WithoutCancel(ctx), c.ID, container.RemoveOptions{Force: true})
	}()
	rootfs, err := docker.ContainerExport(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("export %s: %w", image, err)
	}
	defer rootfs.Close()
	cfg, err := pluginConfig()
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(pluginContext(pw, cfg, rootfs)) }()
	defer pr.Close()
	if err := docker.PluginCreate(ctx, pr, types.PluginCreateOptions{RepoName: name}); err != nil {
		return fmt.Errorf("create plugin %s: %w", name, err)
	}
	return nil
}

// pluginContext writes config.json and the exported filesystem under rootfs/, plus the folders the
// plugin needs (its socket's, its mounts', its state's).
func pluginContext(w io.Writer, cfg []byte, rootfs io.Reader) error {
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: "config.json", Mode: 0o644, Size: int64(len(cfg)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(cfg); err != nil {
		return err
	}
	for _, d := range []string{"rootfs/", "rootfs/run/", "rootfs/run/docker/", "rootfs/run/docker/plugins/", "rootfs/mnt/", "rootfs/mnt/volumes/", "rootfs/var/", "rootfs/var/lib/", "rootfs/var/lib/teledock/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	tr := tar.NewReader(rootfs)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read the image's filesystem: %w", err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		switch name {
		case "", "run/", "mnt/", "var/", "dev/", "proc/", "sys/", ".dockerenv":
			continue // made above, or the engine's own
		}
		if strings.HasPrefix(name, "dev/") || strings.HasPrefix(name, "proc/") || strings.HasPrefix(name, "sys/") {
			continue
		}
		h.Name = "rootfs/" + name
		if h.Linkname != "" && h.Typeflag == tar.TypeLink {
			h.Linkname = "rootfs/" + strings.TrimPrefix(h.Linkname, "./")
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	return tw.Close()
}

// RemovePlugins disables and removes teledock's volume plugins that no volume uses any more; the
// last `quit` leaves nothing of teledock in `docker plugin ls`.
func RemovePlugins(ctx context.Context, docker Docker) error {
	plugins, err := docker.PluginList(ctx, filters.NewArgs())
	if err != nil {
		return fmt.Errorf("list plugins: %w", err)
	}
	var errs []error
	for _, p := range plugins {
		if !strings.HasPrefix(p.Name, PluginPrefix+":") {
			continue
		}
		vols, err := docker.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("driver", p.Name))})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(vols.Volumes) > 0 {
			continue
		}
		if p.Enabled {
			if err := docker.PluginDisable(ctx, p.Name, types.PluginDisableOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("disable plugin %s: %w", p.Name, err))
				continue
			}
		}
		if err := docker.PluginRemove(ctx, p.Name, types.PluginRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove plugin %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}
