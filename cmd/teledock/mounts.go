package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/mounts"
)

// mountOptions are intercept's --mount, --mount-readonly and --mount-mode.
type mountOptions struct {
	mount    string // true, false, or the folder in the handler under which the pod's paths appear
	readOnly bool
	mode     string
}

// root says where the handler sees the mounts: "/" puts each at its pod path; "" means no mounts.
func (o mountOptions) root() (string, error) {
	switch strings.ToLower(o.mount) {
	case "", "true":
		return "/", nil
	case "false":
		return "", nil
	}
	if !path.IsAbs(o.mount) {
		return "", fmt.Errorf("--mount %q: use true, false, or an absolute folder in the container under which the pod's paths appear", o.mount)
	}
	return path.Clean(o.mount), nil
}

// mountReport is what became of an intercept's mounts, for the output and the handler.
type mountReport struct {
	Root    string
	Mode    mounts.Mode
	Volumes []mounts.Volume
	Error   string
	Notice  string
}

// mountVolumes makes the intercept's Docker volumes. A failure is reported, not returned: the
// intercept works without its mounts (the seed's "Volume Mount Error").
func mountVolumes(ctx context.Context, d deps, c *launcher.Container, info *managerv1.InterceptInfo, o mountOptions) *mountReport {
	root, err := o.root()
	if err != nil || root == "" {
		return nil // checked before the intercept was made; "" is --mount=false
	}
	mode, _ := mounts.ParseMode(o.mode) // checked before too
	var ms []mounts.Mount
	for _, m := range info.GetMounts() {
		ms = append(ms, mounts.Mount{Path: m.GetPath(), SFTPPath: "/" + m.GetContainer() + m.GetPath(), ReadOnly: m.GetReadOnly()})
	}
	if len(ms) == 0 {
		return nil
	}
	rep := &mountReport{Root: root}
	docker, err := d.mountsDocker()
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	conn, err := d.connections.Load(c.Connection)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	stop := notifyWait(d.stderr, 2*time.Second, 5*time.Second, "the intercept's volumes")
	res, err := mounts.Create(ctx, docker, mounts.Config{
		Connection:        c.Connection,
		Intercept:         info.GetName(),
		Mounts:            ms,
		Mode:              mode,
		ReadOnly:          o.readOnly,
		Token:             conn.Token,
		DaemonContainer:   c.ID,
		DaemonAPIPort:     c.APIPort,
		DaemonNetworkAddr: c.NetworkAddr,
		Image:             c.Image,
		PluginName:        pluginName(c.Image),
	}, d.log)
	stop()
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.Mode, rep.Volumes, rep.Notice = res.Mode, res.Volumes, res.Notice
	return rep
}

// pluginName is the volume plugin of the daemon image's version: teledock/volumes:TAG.
func pluginName(image string) string {
	tag := "latest"
	if i := strings.LastIndexByte(image, ':'); i >= 0 && !strings.Contains(image[i:], "/") {
		tag = image[i+1:]
	}
	return mounts.PluginPrefix + ":" + tag
}

// removeVolumes removes an intercept's volumes (all of the connection's when intercept is ""),
// bounded; a failure is told, not fatal: `quit` removes what is left.
func removeVolumes(d deps, connection, intercept string) {
	docker, err := d.mountsDocker()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mounts.Remove(ctx, docker, connection, intercept); err != nil {
		fmt.Fprintf(d.stderr, "teledock: removing volumes: %v\n", err)
	}
	if intercept == "" {
		if err := mounts.RemovePlugins(ctx, docker); err != nil {
			d.log.Debug("volume plugin not removed", "err", err)
		}
	}
}

// interceptRunFlags are the docker run flags that give a container an intercept's environment (an
// env file, which cleanup removes once docker has read it) and its volumes, if it has any.
func interceptRunFlags(ctx context.Context, d deps, c *launcher.Container, intercept string, withEnv bool) (flags []string, cleanup func(), err error) {
	client, err := dialDaemon(d, c)
	if err != nil {
		return nil, nil, err
	}
	defer client.Close()
	info, err := findIntercept(ctx, client, intercept)
	if err != nil {
		return nil, nil, fmt.Errorf("run --intercept: %w in connection %s", err, c.Connection)
	}
	cleanup = func() {}
	if withEnv {
		envPath, err := handlerEnvFile(d, info.GetEnvironment())
		if err != nil {
			return nil, nil, err
		}
		cleanup = func() { _ = os.Remove(envPath) }
		flags = []string{"--env-file", envPath}
	}
	docker, err := d.mountsDocker()
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	vols, err := mounts.List(ctx, docker, c.Connection, intercept)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if len(vols) > 0 {
		flags = append(flags, mounts.RunFlags(vols, "/")...)
	}
	return flags, cleanup, nil
}

func (d deps) mountsDocker() (mounts.Docker, error) {
	if d.volumes == nil {
		return nil, errors.New("docker: not available")
	}
	return d.volumes()
}
