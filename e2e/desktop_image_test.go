//go:build e2e

package e2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDesktopExtensionImage checks what `make extension` built: the labels the Extensions SDK wants,
// a metadata.json with the documented fields whose files are all in the image, and a Linux host
// binary that is this version's CLI.
func TestDesktopExtensionImage(t *testing.T) {
	ref := "teledock/desktop-extension:" + cfg.version
	if os.Getenv("TELEDOCK_E2E_CHROMIUM") == "" && docker(t, "image", "inspect", ref).err != nil {
		t.Skip("no extension image (make test builds it with make extension)")
	}
	var labels map[string]string
	out := must(t, docker(t, "image", "inspect", ref, "--format", "{{json .Config.Labels}}"), "inspect "+ref)
	if err := json.Unmarshal([]byte(out), &labels); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.description", "org.opencontainers.image.vendor",
		"com.docker.desktop.extension.api.version", "com.docker.desktop.extension.icon", "com.docker.extension.screenshots",
		"com.docker.extension.detailed-description", "com.docker.extension.publisher-url", "com.docker.extension.changelog"} {
		if strings.TrimSpace(labels[l]) == "" {
			t.Errorf("label %s missing", l)
		}
	}
	var shots []struct{ Alt, URL string }
	if err := json.Unmarshal([]byte(labels["com.docker.extension.screenshots"]), &shots); err != nil || len(shots) == 0 || shots[0].URL == "" {
		t.Errorf("screenshots label is not a JSON list of {alt, url}: %v", err)
	}

	// The image's files, from an export of a container made (never started) from it.
	id := strings.TrimSpace(must(t, docker(t, "create", ref, "none"), "docker create"))
	t.Cleanup(func() { docker(t, "rm", id) })
	dir := t.TempDir()
	export := exec.Command("docker", "export", id)
	stdout, err := export.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := export.Start(); err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	tr := tar.NewReader(stdout)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimPrefix(h.Name, "./")
		files[name] = true
		if name == "/metadata.json" || name == "/linux/teledock" {
			f, err := os.OpenFile(filepath.Join(dir, filepath.Base(name)), os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(f, tr)
			f.Close()
		}
	}
	_ = export.Wait()

	var meta struct {
		Icon string
		UI   map[string]struct{ Title, Root, Src string }
		Host struct {
			Binaries []map[string][]struct{ Path string }
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		t.Fatalf("metadata.json: %v", err)
	}
	want := []string{"/" + meta.Icon}
	tab, ok := meta.UI["dashboard-tab"]
	if !ok || tab.Title == "" || tab.Root == "" || tab.Src == "" {
		t.Errorf("metadata ui.dashboard-tab = %+v", meta.UI)
	}
	want = append(want, tab.Root+"/"+tab.Src, tab.Root+"/app.js")
	oses := map[string]bool{}
	for _, b := range meta.Host.Binaries {
		for os, entries := range b {
			if os != "darwin" && os != "linux" && os != "windows" {
				t.Errorf("host.binaries: unknown OS %q", os)
			}
			oses[os] = true
			for _, e := range entries {
				want = append(want, e.Path)
			}
		}
	}
	if len(oses) != 3 {
		t.Errorf("host.binaries covers %v, want darwin, linux and windows", oses)
	}
	for _, f := range want {
		if !files[f] {
			t.Errorf("%s is named by metadata.json but not in the image", f)
		}
	}
	// The Linux binary is this version's CLI.
	out = must(t, run(t, 30*time.Second, filepath.Join(dir, "teledock"), "version", "-o", "json"), "the image's teledock version")
	var v struct{ Client string }
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Client != cfg.version {
		t.Errorf("the image's CLI is %q (%v), want %s", v.Client, err, cfg.version)
	}
}
