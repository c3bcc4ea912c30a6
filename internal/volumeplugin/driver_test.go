package volumeplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// fakeMounts records mounts; the real mounter (FUSE over SFTP) is tested in podfs and e2e.
type fakeMounts struct {
	mounted map[string]Volume
	fail    error
}

func (f *fakeMounts) mount(dir string, v Volume) (func() error, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.mounted[dir] = v
	return func() error { delete(f.mounted, dir); return nil }, nil
}

func call(t *testing.T, h http.Handler, op string, body any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/"+op, bytes.NewReader(b)))
	if rec.Code != 200 {
		t.Fatalf("%s: HTTP %d", op, rec.Code)
	}
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	return out
}

func errOf(out map[string]any) string { s, _ := out["Err"].(string); return s }

var opts = map[string]string{OptDaemon: "127.0.0.1:7777", OptToken: "t", OptIntercept: "echo", OptPath: "/app/config", OptReadOnly: "true"}

func newDriver(t *testing.T, state string) (*Driver, *fakeMounts) {
	t.Helper()
	f := &fakeMounts{mounted: map[string]Volume{}}
	d, err := New(Config{MountDir: t.TempDir(), StateFile: state, Mount: f.mount}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return d, f
}

func TestDriverProtocol(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	d, f := newDriver(t, state)
	h := d.Handler()

	if got := call(t, h, "Plugin.Activate", nil)["Implements"]; len(got.([]any)) != 1 || got.([]any)[0] != "VolumeDriver" {
		t.Errorf("Activate: %v", got)
	}
	if got := call(t, h, "VolumeDriver.Capabilities", nil)["Capabilities"].(map[string]any)["Scope"]; got != "local" {
		t.Errorf("scope %v", got)
	}
	if e := errOf(call(t, h, "VolumeDriver.Create", request{Name: "v1", Opts: opts})); e != "" {
		t.Fatal(e)
	}
	// Creating it again with the same options is fine (docker run -v does that); other options not.
	if e := errOf(call(t, h, "VolumeDriver.Create", request{Name: "v1", Opts: opts})); e != "" {
		t.Errorf("re-create: %s", e)
	}
	other := map[string]string{OptDaemon: "127.0.0.1:7777", OptToken: "t", OptIntercept: "other", OptPath: "/x"}
	if e := errOf(call(t, h, "VolumeDriver.Create", request{Name: "v1", Opts: other})); e == "" {
		t.Error("re-create with other options worked")
	}

	// Path is empty until mounted; two containers share one mount, which ends with the last.
	if mp := call(t, h, "VolumeDriver.Path", request{Name: "v1"})["Mountpoint"]; mp != "" {
		t.Errorf("Path before Mount: %v", mp)
	}
	mp := call(t, h, "VolumeDriver.Mount", request{Name: "v1", ID: "c1"})["Mountpoint"].(string)
	call(t, h, "VolumeDriver.Mount", request{Name: "v1", ID: "c2"})
	if len(f.mounted) != 1 || f.mounted[mp].Intercept != "echo" || !f.mounted[mp].ReadOnly {
		t.Fatalf("mounted: %+v", f.mounted)
	}
	if e := errOf(call(t, h, "VolumeDriver.Remove", request{Name: "v1"})); !strings.Contains(e, "in use") {
		t.Errorf("Remove while mounted: %q", e)
	}
	call(t, h, "VolumeDriver.Unmount", request{Name: "v1", ID: "c1"})
	if len(f.mounted) != 1 {
		t.Error("unmounted while a container still uses it")
	}
	call(t, h, "VolumeDriver.Unmount", request{Name: "v1", ID: "c2"})
	if len(f.mounted) != 0 {
		t.Error("still mounted after the last container")
	}

	// The volumes survive a plugin restart (a dockerd restart restarts plugins).
	d2, _ := newDriver(t, state)
	vols := call(t, d2.Handler(), "VolumeDriver.List", nil)["Volumes"].([]any)
	if len(vols) != 1 || vols[0].(map[string]any)["Name"] != "v1" {
		t.Errorf("List after restart: %v", vols)
	}
	if e := errOf(call(t, h, "VolumeDriver.Remove", request{Name: "v1"})); e != "" {
		t.Error(e)
	}
	if e := errOf(call(t, h, "VolumeDriver.Get", request{Name: "v1"})); e == "" {
		t.Error("Get after Remove worked")
	}
}

func TestDriverRefuses(t *testing.T) {
	d, f := newDriver(t, "")
	h := d.Handler()
	for name, req := range map[string]request{
		"bad name":       {Name: "../x", Opts: opts},
		"no options":     {Name: "v"},
		"relative path":  {Name: "v", Opts: map[string]string{OptDaemon: "a:1", OptToken: "t", OptIntercept: "i", OptPath: "x"}},
		"unknown option": {Name: "v", Opts: map[string]string{OptDaemon: "a:1", OptToken: "t", OptIntercept: "i", OptPath: "/x", "size": "1"}},
		"bad readonly":   {Name: "v", Opts: map[string]string{OptDaemon: "a:1", OptToken: "t", OptIntercept: "i", OptPath: "/x", OptReadOnly: "maybe"}},
	} {
		if e := errOf(call(t, h, "VolumeDriver.Create", req)); e == "" {
			t.Errorf("%s: Create worked", name)
		}
	}
	if e := errOf(call(t, h, "VolumeDriver.Mount", request{Name: "nope", ID: "c"})); e == "" {
		t.Error("Mount of an unknown volume worked")
	}
	// A failed mount says why and leaves the volume unmounted.
	f.fail = errors.New("intercept echo is not active yet")
	call(t, h, "VolumeDriver.Create", request{Name: "v", Opts: opts})
	if e := errOf(call(t, h, "VolumeDriver.Mount", request{Name: "v", ID: "c"})); !strings.Contains(e, "not active") {
		t.Errorf("Mount error %q", e)
	}
	if e := errOf(call(t, h, "VolumeDriver.Remove", request{Name: "v"})); e != "" {
		t.Errorf("Remove after a failed mount: %s", e)
	}
}
