package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"teledock.dev/teledock/internal/podfs"
	"teledock.dev/teledock/internal/volumeplugin"
)

// The daemon image doubles as teledock's volume plugin (its rootfs) and as the copy-mode helper:
// one static binary, so that nothing else has to be built, shipped or pulled.

const (
	pluginSocket   = "/run/docker/plugins/teledock.sock"
	pluginMountDir = "/mnt/volumes" // the plugin's propagated mount
	pluginState    = "/var/lib/teledock/volumes.json"
)

// runVolumePlugin serves the Docker volume plugin protocol until ctx ends.
func runVolumePlugin(ctx context.Context, log *slog.Logger) error {
	state := pluginState
	if err := os.MkdirAll(filepath.Dir(state), 0o700); err != nil {
		log.Warn("volumes will not survive a plugin restart", "err", err)
		state = ""
	}
	d, err := volumeplugin.New(volumeplugin.Config{MountDir: pluginMountDir, StateFile: state, Mount: fuseMount(log)}, log)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := os.MkdirAll(filepath.Dir(pluginSocket), 0o755); err != nil {
		return err
	}
	_ = os.Remove(pluginSocket)
	ln, err := net.Listen("unix", pluginSocket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("volume plugin serving", "socket", pluginSocket)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// fuseMount mounts a volume once its remote folder answers: a volume whose intercept is gone fails
// `docker run` with the reason instead of mounting an empty, broken folder.
func fuseMount(log *slog.Logger) volumeplugin.Mounter {
	return func(dir string, v volumeplugin.Volume) (func() error, error) {
		r, err := podfs.NewRemote(podfs.Config{Daemon: v.Daemon, Token: v.Token, Intercept: v.Intercept}, log)
		if err != nil {
			return nil, err
		}
		if err := podfs.Check(context.Background(), r, v.Path); err != nil {
			r.Close()
			return nil, err
		}
		srv, err := podfs.Mount(dir, r, v.Path, v.ReadOnly)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("fuse: %w", err)
		}
		return func() error {
			defer r.Close()
			if err := srv.Unmount(); err != nil {
				// Busy (a process still in it): detach, so that nothing stale blocks the next mount.
				log.Warn("unmount busy; detaching", "dir", dir, "err", err)
				if derr := syscall.Unmount(dir, syscall.MNT_DETACH); derr != nil {
					return errors.Join(err, derr)
				}
			}
			return nil
		}, nil
	}
}

// runVolumeCopy fills the helper's volumes with copies of the mounts and refreshes them until ctx
// ends. It gives up when the volumes have been unreachable for a minute (the intercept or its
// connection is gone and the CLI that would have removed the helper died).
func runVolumeCopy(ctx context.Context, getenv func(string) string, log *slog.Logger) error {
	var pairs []podfs.CopyPair
	if err := json.Unmarshal([]byte(getenv(podfs.EnvCopies)), &pairs); err != nil || len(pairs) == 0 {
		return fmt.Errorf("%s: want a JSON list of {from, to}: %v", podfs.EnvCopies, err)
	}
	refresh := 5 * time.Second
	if s := getenv(podfs.EnvRefresh); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s=%q: want a positive duration", podfs.EnvRefresh, s)
		}
		refresh = d
	}
	// A whole file is one operation here, so it gets longer than a FUSE read would.
	r, err := podfs.NewRemote(podfs.Config{Daemon: getenv(podfs.EnvDaemon), Token: getenv("TELEDOCK_TOKEN"),
		Intercept: getenv(podfs.EnvIntercept), OpTimeout: 2 * time.Minute}, log)
	if err != nil {
		return err
	}
	defer r.Close()
	copies := make([]*podfs.Copy, len(pairs))
	for i, p := range pairs {
		copies[i] = &podfs.Copy{Remote: r, From: p.From, To: p.To}
	}
	ready := false
	var failingSince time.Time
	for {
		err := syncAll(ctx, copies, log)
		switch {
		case err == nil:
			failingSince = time.Time{}
			if !ready {
				if werr := os.WriteFile(podfs.ReadyFile, nil, 0o644); werr != nil {
					return werr
				}
				ready = true
				log.Info("volumes copied", "mounts", len(copies))
			}
		case ctx.Err() != nil:
			return nil
		case !ready:
			// The first copy must work: the CLI waits for it and shows this error.
			return err
		default:
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			log.Warn("refresh failed", "err", err)
			if time.Since(failingSince) > time.Minute {
				return fmt.Errorf("the intercept's volumes are unreachable since %s: %w", failingSince.Format(time.RFC3339), err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(refresh):
		}
	}
}

func syncAll(ctx context.Context, copies []*podfs.Copy, log *slog.Logger) error {
	for _, c := range copies {
		st, err := c.Sync(ctx)
		if err != nil {
			return err
		}
		if st.Copied+st.Removed > 0 {
			log.Debug("refreshed", "mount", c.From, "copied", st.Copied, "removed", st.Removed, "bytes", st.Bytes)
		}
	}
	return nil
}
