package podfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// mountOrSkip mounts root of the pod at a temporary folder; FUSE needs /dev/fuse and the right to
// mount (root, as the volume plugin has CAP_SYS_ADMIN).
func mountOrSkip(t *testing.T, r *Remote, root string, readOnly bool) string {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skip("FUSE mounts need /dev/fuse and root; the e2e tests cover the plugin")
	}
	dir := t.TempDir()
	srv, err := Mount(dir, r, root, readOnly)
	if err != nil {
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

func TestFUSE(t *testing.T) {
	p := startPod(t)
	write(t, filepath.Join(p.config, "..2026_01", "greeting"), "hello")
	if err := os.Symlink("..2026_01", filepath.Join(p.config, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/greeting", filepath.Join(p.config, "greeting")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(p.data, "a.txt"), "a")

	r := p.remote(t, "echo")
	cfg := mountOrSkip(t, r, "/app/config", true)
	data := mountOrSkip(t, r, "/app/data", false)

	if got := read(t, filepath.Join(cfg, "greeting")); got != "hello" {
		t.Errorf("greeting = %q", got)
	}
	if target, err := os.Readlink(filepath.Join(cfg, "greeting")); err != nil || target != "..data/greeting" {
		t.Errorf("greeting links to %q (%v)", target, err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "new"), []byte("x"), 0o644); err == nil {
		t.Error("a write into the read-only mount worked")
	}
	if got := read(t, filepath.Join(data, "a.txt")); got != "a" {
		t.Errorf("a.txt = %q", got)
	}
	// Writes reach the pod.
	write(t, filepath.Join(data, "dir", "b.txt"), "written locally")
	if got := read(t, filepath.Join(p.data, "dir", "b.txt")); got != "written locally" {
		t.Errorf("the pod has %q", got)
	}
	if err := os.Rename(filepath.Join(data, "dir", "b.txt"), filepath.Join(data, "c.txt")); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(p.data, "c.txt")); got != "written locally" {
		t.Errorf("after the rename the pod has %q", got)
	}
	entries, err := os.ReadDir(data)
	if err != nil || len(entries) != 3 { // a.txt, c.txt, dir (before big and many)
		t.Errorf("readdir: %v, %v", entries, err)
	}

	// A file larger than the read-ahead, and one that ends inside it, read back whole; and a folder
	// listed with every entry's type (READDIRPLUS, served from the listing).
	for _, size := range []int{readAhead*2 + 12345, 1000} {
		big := make([]byte, size)
		for i := range big {
			big[i] = byte(i * 7 / 5)
		}
		if err := os.WriteFile(filepath.Join(p.data, "big"), big, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(data, "big"))
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read %d of %d bytes through the mount (%v); equal: %v", len(got), size, err, bytes.Equal(got, big))
		}
	}
	for i := range 50 {
		write(t, filepath.Join(p.data, "many", fmt.Sprintf("f%02d", i)), "x")
	}
	if entries, err := os.ReadDir(filepath.Join(data, "many")); err != nil || len(entries) != 50 || !entries[0].Type().IsRegular() {
		t.Errorf("listing: %d entries, %v", len(entries), err)
	}

	// The agent goes away: reads fail with EIO within the timeouts, not hang.
	p.icpt.mu.Lock()
	p.icpt.down = true
	p.icpt.mu.Unlock()
	p.stopAgent()
	start := time.Now()
	_, err = os.ReadFile(filepath.Join(data, "fresh-name"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read after the agent left: %v, want EIO", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the read failed after %s", d)
	}
}
