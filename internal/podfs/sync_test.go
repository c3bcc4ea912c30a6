package podfs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCopySync(t *testing.T) {
	p := startPod(t)
	ctx := context.Background()
	// A ConfigMap-like folder: keys are symlinks through ..data into a timestamped folder.
	write(t, filepath.Join(p.config, "..2026_01", "greeting"), "hello")
	if err := os.Symlink("..2026_01", filepath.Join(p.config, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/greeting", filepath.Join(p.config, "greeting")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(p.data, "sub", "a.txt"), "a")

	r := p.remote(t, "echo")
	cfg := &Copy{Remote: r, From: "/app/config", To: t.TempDir()}
	data := &Copy{Remote: r, From: "/app/data", To: t.TempDir()}
	for _, c := range []*Copy{cfg, data} {
		if _, err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(t, filepath.Join(cfg.To, "greeting")); got != "hello" {
		t.Errorf("greeting = %q", got)
	}
	if target, err := os.Readlink(filepath.Join(cfg.To, "greeting")); err != nil || target != "..data/greeting" {
		t.Errorf("greeting is a link to %q (%v), want ..data/greeting", target, err)
	}
	if got := read(t, filepath.Join(data.To, "sub", "a.txt")); got != "a" {
		t.Errorf("sub/a.txt = %q", got)
	}

	// A ConfigMap update: a new timestamped folder, ..data swapped, the old one removed.
	write(t, filepath.Join(p.config, "..2026_02", "greeting"), "hello again")
	if err := os.Symlink("..2026_02", filepath.Join(p.config, "..data.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(p.config, "..data.tmp"), filepath.Join(p.config, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(p.config, "..2026_01")); err != nil {
		t.Fatal(err)
	}
	// A changed file (the size changes too: mtimes have a second's resolution over SFTP).
	write(t, filepath.Join(p.data, "sub", "a.txt"), "aa")
	if err := os.Remove(filepath.Join(p.data, "sub", "a.txt")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(p.data, "b.txt"), "b")
	// A file written locally stays.
	write(t, filepath.Join(data.To, "local.txt"), "mine")

	st, err := cfg.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed == 0 || st.Copied == 0 {
		t.Errorf("config sync: %+v, want copies and removals", st)
	}
	if got := read(t, filepath.Join(cfg.To, "greeting")); got != "hello again" {
		t.Errorf("greeting after the update = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(cfg.To, "..2026_01")); !os.IsNotExist(err) {
		t.Errorf("the old ConfigMap folder is still there: %v", err)
	}
	if _, err := data.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data.To, "sub", "a.txt")); !os.IsNotExist(err) {
		t.Errorf("sub/a.txt removed in the pod is still in the copy: %v", err)
	}
	if got := read(t, filepath.Join(data.To, "b.txt")); got != "b" {
		t.Errorf("b.txt = %q", got)
	}
	if got := read(t, filepath.Join(data.To, "local.txt")); got != "mine" {
		t.Errorf("local.txt = %q", got)
	}

	// The intercept ends: the next sync fails fast instead of hanging, and works again after.
	p.icpt.mu.Lock()
	p.icpt.down = true
	p.icpt.mu.Unlock()
	p.stopAgent()
	start := time.Now()
	if _, err := data.Sync(ctx); err == nil {
		t.Fatal("sync after the agent stopped worked")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("sync failed after %s, want within the dial timeout", d)
	}
}
