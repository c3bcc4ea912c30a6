package mounts

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/docker/docker/api/types/volume"
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
