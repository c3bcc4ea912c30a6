package mounts

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/pkg/stdcopy"

	"teledock.dev/teledock/internal/podfs"
)

// createCopies makes plain local volumes and starts the helper that fills and refreshes them, then
// waits for its first copy.
func createCopies(ctx context.Context, docker Docker, cfg Config, log *slog.Logger) ([]Volume, error) {
	var out []Volume
	var pairs []podfs.CopyPair
	var binds []mount.Mount
	for i, m := range cfg.Mounts {
		ro := m.ReadOnly || cfg.ReadOnly
		v, err := docker.VolumeCreate(ctx, volume.CreateOptions{
			Name:   VolumeName(cfg.Connection, cfg.Intercept, i),
			Labels: cfg.labels(m, ro, Copy),
		})
		if err != nil {
			return nil, fmt.Errorf("create volume for %s: %w", m.Path, err)
		}
		out = append(out, Volume{Name: v.Name, Path: m.Path, ReadOnly: ro})
		to := fmt.Sprintf("/teledock/volumes/%d", i)
		pairs = append(pairs, podfs.CopyPair{From: m.SFTPPath, To: to})
		binds = append(binds, mount.Mount{Type: mount.TypeVolume, Source: v.Name, Target: to})
	}
	copies, err := json.Marshal(pairs)
	if err != nil {
		return nil, err
	}
	name := helperName(cfg.Connection, cfg.Intercept)
	c, err := docker.ContainerCreate(ctx, &container.Config{
		Image: cfg.Image,
		Cmd:   []string{"volume-copy"},
		Env: []string{
			"TELEDOCK_TOKEN=" + cfg.Token,
			podfs.EnvDaemon + "=127.0.0.1:" + cfg.DaemonAPIPort,
			podfs.EnvIntercept + "=" + cfg.Intercept,
			podfs.EnvCopies + "=" + string(copies),
		},
		Labels: map[string]string{LabelConnection: cfg.Connection, LabelIntercept: cfg.Intercept, LabelMode: string(Copy)},
		Healthcheck: &container.HealthConfig{
			Test:     []string{"CMD", "/teledock-daemon", "volume-copy-ready"},
			Interval: 500 * time.Millisecond,
			Timeout:  5 * time.Second,
			Retries:  1,
		},
	}, &container.HostConfig{
		NetworkMode: container.NetworkMode("container:" + cfg.DaemonContainer),
		Mounts:      binds,
		// It only reads the tunnel and writes its own volumes.
		CapDrop:     []string{"ALL"},
		SecurityOpt: []string{"no-new-privileges"},
	}, nil, nil, name)
	if err != nil {
		return nil, fmt.Errorf("create the copy helper: %w", err)
	}
	if err := docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return nil, fmt.Errorf("start the copy helper: %w", err)
	}
	if err := waitHealthy(ctx, docker, c.ID); err != nil {
		return nil, err
	}
	log.Debug("volumes copied", "intercept", cfg.Intercept, "mounts", len(out))
	return out, nil
}

// waitHealthy waits for the helper's first copy, or says why it stopped.
func waitHealthy(ctx context.Context, docker Docker, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		info, err := docker.ContainerInspect(ctx, id)
		if err != nil {
			return fmt.Errorf("the copy helper: %w", err)
		}
		switch {
		case info.State == nil:
		case info.State.Health != nil && info.State.Health.Status == container.Healthy:
			return nil
		case !info.State.Running:
			return fmt.Errorf("copying the volumes failed: %s", lastLog(ctx, docker, id))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("copying the volumes: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lastLog is the helper's last log line: its error.
func lastLog(ctx context.Context, docker Docker, id string) string {
	rc, err := docker.ContainerLogs(ctx, id, container.LogsOptions{ShowStderr: true, ShowStdout: true, Tail: "3"})
	if err != nil {
		return "no log: " + err.Error()
	}
	defer rc.Close()
	var b strings.Builder
	_, _ = stdcopy.StdCopy(&b, &b, io.LimitReader(rc, 64<<10))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	return lines[len(lines)-1]
}
