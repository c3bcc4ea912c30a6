package mounts

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestRunFlags(t *testing.T) {
	vols := []Volume{{Name: "teledock-c-echo-0", Path: "/etc/config", ReadOnly: true}, {Name: "teledock-c-echo-1", Path: "/cache"}}
	got := RunFlags(vols, "/")
	want := []string{"-v", "teledock-c-echo-0:/etc/config:ro", "-v", "teledock-c-echo-1:/cache",
		"-e", "TELEDOCK_ROOT=/", "-e", "TELEDOCK_MOUNTS=/etc/config:/cache",
		"-e", "TELEPRESENCE_ROOT=/", "-e", "TELEPRESENCE_MOUNTS=/etc/config:/cache"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RunFlags(/) =\n%q\nwant\n%q", got, want)
	}
	got = RunFlags(vols[1:], "/tmp/pod")
	if got[1] != "teledock-c-echo-1:/tmp/pod/cache" || got[3] != "TELEDOCK_ROOT=/tmp/pod" {
		t.Errorf("RunFlags(/tmp/pod) = %q", got)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": Auto, "auto": Auto, "plugin": Plugin, "copy": Copy} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("nfs"); err == nil {
		t.Error("ParseMode(nfs) worked")
	}
}

func TestVolumeOrder(t *testing.T) {
	// Mount 10 sorts after mount 2, as the mounts' order is numeric.
	if volumeIndex(VolumeName("c", "a-b", 10)) != 10 || volumeIndex(VolumeName("c", "a-b", 2)) != 2 {
		t.Error("volumeIndex")
	}
}

// exported is what `docker export` of the daemon image gives.
func exported(t *testing.T) io.Reader {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range []*tar.Header{
		{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "dev/console", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: ".dockerenv", Typeflag: tar.TypeReg, Mode: 0o755},
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "proc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "teledock-daemon", Typeflag: tar.TypeReg, Mode: 0o755, Size: 3},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			_, _ = tw.Write([]byte("elf"))
		}
	}
	_ = tw.Close()
	return &b
}

func TestPluginContext(t *testing.T) {
	cfg, err := pluginConfig()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := pluginContext(&b, cfg, exported(t)); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&b)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		files[h.Name] = string(body)
	}
	for _, want := range []string{"config.json", "rootfs/teledock-daemon", "rootfs/etc/", "rootfs/run/docker/plugins/", "rootfs/mnt/volumes/", "rootfs/var/lib/teledock/"} {
		if _, ok := files[want]; !ok {
			t.Errorf("%s missing from the plugin context", want)
		}
	}
	for _, no := range []string{"rootfs/dev/console", "rootfs/.dockerenv", "rootfs/proc/"} {
		if _, ok := files[no]; ok {
			t.Errorf("%s is in the plugin context; the engine provides it", no)
		}
	}
	var c struct {
		Entrypoint []string
		Network    struct{ Type string }
		Linux      struct {
			Capabilities []string
			Devices      []struct{ Path string }
		}
		PropagatedMount string
	}
	if err := json.Unmarshal([]byte(files["config.json"]), &c); err != nil {
		t.Fatal(err)
	}
	// Least privilege: FUSE needs CAP_SYS_ADMIN and /dev/fuse, nothing else.
	if !reflect.DeepEqual(c.Linux.Capabilities, []string{"CAP_SYS_ADMIN"}) || len(c.Linux.Devices) != 1 || c.Linux.Devices[0].Path != "/dev/fuse" {
		t.Errorf("plugin privileges: %+v", c.Linux)
	}
	if c.PropagatedMount != "/mnt/volumes" || c.Network.Type != "host" || c.Entrypoint[1] != "volume-plugin" {
		t.Errorf("plugin config: %+v", c)
	}
}

// volumeLister is a Docker that only lists volumes (the rest panics if called).
type volumeLister struct {
	Docker
	vols []*volume.Volume
}

func (f volumeLister) VolumeList(context.Context, volume.ListOptions) (volume.ListResponse, error) {
	return volume.ListResponse{Volumes: f.vols}, nil
}

func TestReusable(t *testing.T) {
	cfg := Config{Connection: "compose-p", Intercept: "web", Mode: Auto, Token: "t1", DaemonNetworkAddr: "172.18.0.2:7777",
		PluginName: "teledock/volumes:v1", Mounts: []Mount{{Path: "/etc/config", SFTPPath: "/app/etc/config", ReadOnly: true}}}
	made := func(c Config) []*volume.Volume {
		m := c.Mounts[0]
		return []*volume.Volume{{Name: VolumeName(c.Connection, c.Intercept, 0), Driver: c.PluginName,
			Options: c.pluginOptions(m, true), Labels: c.labels(m, true, Plugin)}}
	}
	res := reusable(context.Background(), volumeLister{vols: made(cfg)}, cfg)
	if res == nil || len(res.Volumes) != 1 || res.Volumes[0].Path != "/etc/config" || !res.Volumes[0].ReadOnly {
		t.Fatalf("same options: %+v, want the volume reused", res)
	}
	other := cfg
	other.Token = "t2" // a new daemon
	if res := reusable(context.Background(), volumeLister{vols: made(other)}, cfg); res != nil {
		t.Errorf("volumes of another token reused: %+v", res)
	}
	if res := reusable(context.Background(), volumeLister{}, cfg); res != nil {
		t.Errorf("nothing to reuse, got %+v", res)
	}
	copyCfg := cfg
	copyCfg.Mode = Copy
	if res := reusable(context.Background(), volumeLister{vols: made(cfg)}, copyCfg); res != nil {
		t.Errorf("copy mode reused plugin volumes: %+v", res)
	}
}

// lockedDown is a Docker engine that refuses to enable plugins (rootless Docker, a locked-down
// Docker Desktop) and otherwise works: volumes, containers, a helper that turns healthy.
type lockedDown struct {
	Docker
	volumes      []string
	helper       *container.Config
	helperHost   *container.HostConfig
	pluginsLeft  int
	exportCalled bool
}

func (f *lockedDown) PluginInspectWithRaw(context.Context, string) (*types.Plugin, []byte, error) {
	return nil, nil, cerrdefs.ErrNotFound
}
func (f *lockedDown) ContainerCreate(_ context.Context, c *container.Config, h *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	if name != "" {
		f.helper, f.helperHost = c, h
	}
	return container.CreateResponse{ID: "id-" + name}, nil
}
func (f *lockedDown) ContainerExport(context.Context, string) (io.ReadCloser, error) {
	f.exportCalled = true
	var b bytes.Buffer
	_ = tar.NewWriter(&b).Close()
	return io.NopCloser(&b), nil
}
func (f *lockedDown) ContainerRemove(context.Context, string, container.RemoveOptions) error {
	return nil
}
func (f *lockedDown) PluginCreate(_ context.Context, r io.Reader, _ types.PluginCreateOptions) error {
	_, err := io.Copy(io.Discard, r)
	f.pluginsLeft++
	return err
}
func (f *lockedDown) PluginEnable(context.Context, string, types.PluginEnableOptions) error {
	return errors.New("plugins are disabled in this engine")
}
func (f *lockedDown) PluginRemove(context.Context, string, types.PluginRemoveOptions) error {
	f.pluginsLeft--
	return nil
}
func (f *lockedDown) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return nil, nil
}
func (f *lockedDown) VolumeList(context.Context, volume.ListOptions) (volume.ListResponse, error) {
	return volume.ListResponse{}, nil
}
func (f *lockedDown) VolumeCreate(_ context.Context, o volume.CreateOptions) (volume.Volume, error) {
	if o.Driver != "" {
		return volume.Volume{}, errors.New("no plugin volumes here")
	}
	f.volumes = append(f.volumes, o.Name)
	return volume.Volume{Name: o.Name}, nil
}
func (f *lockedDown) ContainerStart(context.Context, string, container.StartOptions) error {
	return nil
}
func (f *lockedDown) ContainerInspect(context.Context, string) (container.InspectResponse, error) {
	return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{
		State: &container.State{Running: true, Health: &container.Health{Status: container.Healthy}}}}, nil
}

func TestAutoFallsBackToCopy(t *testing.T) {
	f := &lockedDown{}
	cfg := Config{Connection: "c", Intercept: "echo", Mode: Auto, Token: "t", DaemonContainer: "d1", DaemonAPIPort: "7777",
		DaemonNetworkAddr: "172.17.0.2:7777", Image: "teledock/daemon:v1", PluginName: "teledock/volumes:v1",
		Mounts: []Mount{{Path: "/etc/config", SFTPPath: "/app/etc/config", ReadOnly: true}, {Path: "/cache", SFTPPath: "/app/cache"}}}
	res, err := Create(context.Background(), f, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != Copy || !strings.Contains(res.Notice, "plugins are disabled") {
		t.Errorf("mode %q, notice %q; want copy, saying why", res.Mode, res.Notice)
	}
	if f.pluginsLeft != 0 || !f.exportCalled {
		t.Errorf("the plugin was tried (%v) and must be removed again (%d left)", f.exportCalled, f.pluginsLeft)
	}
	if len(res.Volumes) != 2 || !res.Volumes[0].ReadOnly || res.Volumes[1].Path != "/cache" || len(f.volumes) != 2 {
		t.Errorf("volumes %+v (made %q)", res.Volumes, f.volumes)
	}
	// The helper: in the daemon's network, no capabilities, the volumes mounted, the token and
	// the mounts in its environment.
	h, hc := f.helper, f.helperHost
	if h == nil || string(hc.NetworkMode) != "container:d1" || len(hc.CapDrop) != 1 || hc.CapDrop[0] != "ALL" || len(hc.CapAdd) != 0 || hc.Privileged {
		t.Fatalf("helper %+v / %+v", h, hc)
	}
	if len(hc.Mounts) != 2 || hc.Mounts[0].Source != "teledock-c-echo-0" {
		t.Errorf("helper mounts %+v", hc.Mounts)
	}
	env := strings.Join(h.Env, "\n")
	for _, want := range []string{"TELEDOCK_TOKEN=t", "TELEDOCK_VOLUMES_DAEMON=127.0.0.1:7777", `"from":"/app/cache"`} {
		if !strings.Contains(env, want) {
			t.Errorf("helper env lacks %s:\n%s", want, env)
		}
	}

	// plugin mode says why instead of falling back.
	cfg.Mode = Plugin
	if _, err := Create(context.Background(), &lockedDown{}, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "plugins are disabled") {
		t.Errorf("plugin mode on a locked-down engine: %v", err)
	}
}

// racedInstall is an engine where another teledock installs the plugin between our inspect and
// our create.
type racedInstall struct {
	lockedDown
	inspects int
}

func (f *racedInstall) PluginInspectWithRaw(context.Context, string) (*types.Plugin, []byte, error) {
	f.inspects++
	if f.inspects == 1 {
		return nil, nil, cerrdefs.ErrNotFound
	}
	return &types.Plugin{Enabled: true}, nil, nil
}

func (f *racedInstall) PluginCreate(_ context.Context, r io.Reader, _ types.PluginCreateOptions) error {
	_, _ = io.Copy(io.Discard, r)
	return errors.New("plugin teledock/volumes:v1 already exists")
}

func TestEnsurePluginInstalledMeanwhile(t *testing.T) {
	f := &racedInstall{}
	if err := EnsurePlugin(context.Background(), f, "teledock/volumes:v1", "teledock/daemon:v1", slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Errorf("a plugin installed meanwhile: %v", err)
	}
}
