package volumes

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pkg/sftp"
	"go.uber.org/goleak"
)

// pipe is one end of an in-memory byte stream pair.
type pipe struct {
	io.Reader
	io.WriteCloser
}

// session serves fsys to an SFTP client over pipes and closes both at the end of the test.
func session(t *testing.T, fsys *FS) *sftp.Client {
	t.Helper()
	c2sR, c2sW := io.Pipe()
	s2cR, s2cW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- fsys.Serve(pipe{c2sR, s2cW}) }()
	client, err := sftp.NewClientPipe(s2cR, c2sW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		c2sW.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s2cW.Close()
	})
	return client
}

// podLayout makes what an agent sees: a ConfigMap volume (keys are symlinks through ..data), a
// Secret, an emptyDir, and a file beside them that no mount holds.
func podLayout(t *testing.T) (dir string, mounts []Mount) {
	t.Helper()
	dir = t.TempDir()
	mk := func(p, data string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("cfg/..2025_01_01/color", "blue")
	link("..2025_01_01", "cfg/..data")
	link("..data/color", "cfg/color")
	link("/etc/hostname", "cfg/absolute")  // out by an absolute target
	link("../secret/token", "cfg/sibling") // out by .. into another mount's folder
	mk("secret/token", "s3cr3t")
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	mk("outside.txt", "not yours")
	return dir, []Mount{
		{PodPath: "/etc/config", Dir: filepath.Join(dir, "cfg"), ReadOnly: true},
		{PodPath: "/var/run/secrets/app", Dir: filepath.Join(dir, "secret"), ReadOnly: true},
		{PodPath: "/cache", Dir: filepath.Join(dir, "empty")},
	}
}

func newFS(t *testing.T, mounts []Mount) *FS {
	t.Helper()
	fsys, err := New(mounts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	return fsys
}

func readFile(c *sftp.Client, p string) (string, error) {
	f, err := c.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

func names(t *testing.T, c *sftp.Client, dir string) []string {
	t.Helper()
	infos, err := c.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir %s: %v", dir, err)
	}
	var out []string
	for _, fi := range infos {
		out = append(out, fi.Name())
	}
	slices.Sort(out)
	return out
}

func TestReadsAtThePodsPaths(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so it runs after the session closed
	_, mounts := podLayout(t)
	c := session(t, newFS(t, mounts))

	for p, want := range map[string]string{"/etc/config/color": "blue", "/etc/config/..data/color": "blue", "/var/run/secrets/app/token": "s3cr3t"} {
		if got, err := readFile(c, p); err != nil || got != want {
			t.Errorf("read %s = %q, %v; want %q", p, got, err, want)
		}
	}
	if got := names(t, c, "/"); !slices.Equal(got, []string{"cache", "etc", "var"}) {
		t.Errorf("/ lists %v", got)
	}
	if got := names(t, c, "/var/run/secrets"); !slices.Equal(got, []string{"app"}) {
		t.Errorf("/var/run/secrets lists %v", got)
	}
	if got := names(t, c, "/etc/config"); !slices.Equal(got, []string{"..2025_01_01", "..data", "absolute", "color", "sibling"}) {
		t.Errorf("/etc/config lists %v", got)
	}
	// ConfigMap keys stay symlinks through ..data, as the pod sees them.
	if fi, err := c.Lstat("/etc/config/color"); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("lstat color: %v %v", fi, err)
	}
	if target, err := c.ReadLink("/etc/config/..data"); err != nil || target != "..2025_01_01" {
		t.Errorf("readlink ..data = %q, %v", target, err)
	}
	if fi, err := c.Stat("/etc"); err != nil || !fi.IsDir() {
		t.Errorf("stat /etc: %v %v", fi, err)
	}
}

func TestNothingOutsideTheMounts(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so it runs after the session closed
	_, mounts := podLayout(t)
	c := session(t, newFS(t, mounts))
	for _, p := range []string{
		"/etc/config/absolute",          // absolute symlink
		"/etc/config/sibling",           // .. symlink into another mount's folder
		"/etc/config/../../outside.txt", // .. in the request: cleaned to /outside.txt, in no mount
		"/outside.txt",
		"/etc/passwd", // a made-up directory has only the mounts in it
	} {
		if got, err := readFile(c, p); err == nil {
			t.Errorf("read %s = %q, want an error", p, got)
		}
	}
	if _, err := c.ReadDir("/etc/config/../.."); err != nil {
		t.Errorf("ReadDir of the made-up root: %v", err)
	}
	if _, err := c.ReadDir("/usr"); err == nil {
		t.Errorf("ReadDir /usr worked")
	}
}

func TestReadOnlyMountsRefuseWrites(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so it runs after the session closed
	dir, mounts := podLayout(t)
	c := session(t, newFS(t, mounts))
	denied := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s worked on a read-only mount", what)
			return
		}
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s: %v, want permission denied", what, err)
		}
	}
	_, err := c.Create("/etc/config/new")
	denied("create", err)
	_, err = c.OpenFile("/var/run/secrets/app/token", os.O_WRONLY|os.O_TRUNC)
	denied("open for writing", err)
	denied("remove", c.Remove("/etc/config/color"))
	denied("rename", c.Rename("/etc/config/color", "/etc/config/colour"))
	denied("mkdir", c.Mkdir("/etc/config/d"))
	denied("chmod", c.Chmod("/var/run/secrets/app/token", 0o777))
	denied("mkdir in a made-up directory", c.Mkdir("/etc/new"))
	denied("remove a made-up directory", c.RemoveDirectory("/var/run"))
	if b, _ := os.ReadFile(filepath.Join(dir, "secret/token")); string(b) != "s3cr3t" {
		t.Errorf("the secret changed: %q", b)
	}
}

func TestWritableMount(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so it runs after the session closed
	dir, mounts := podLayout(t)
	c := session(t, newFS(t, mounts))
	f, err := c.Create("/cache/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("written locally")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir("/cache/sub"); err != nil {
		t.Fatal(err)
	}
	if err := c.PosixRename("/cache/a.txt", "/cache/sub/b.txt"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "empty/sub/b.txt")); err != nil || string(b) != "written locally" {
		t.Errorf("the pod's folder has %q, %v", b, err)
	}
	if err := c.Truncate("/cache/sub/b.txt", 7); err != nil {
		t.Fatal(err)
	}
	if got, _ := readFile(c, "/cache/sub/b.txt"); got != "written" {
		t.Errorf("after truncate: %q", got)
	}
	// A symlink may be made, but following it out of the mount fails like any other.
	if err := c.Symlink("/etc/hostname", "/cache/out"); err != nil {
		t.Fatal(err)
	}
	if got, err := readFile(c, "/cache/out"); err == nil {
		t.Errorf("read through an absolute symlink: %q", got)
	}
	if err := c.Rename("/cache/sub/b.txt", "/etc/config/b.txt"); err == nil {
		t.Errorf("rename into a read-only mount worked")
	}
	if err := c.Remove("/cache/sub/b.txt"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveDirectory("/cache"); err == nil {
		t.Errorf("removing the mount point worked")
	}
}

func TestNewRefusesBadMounts(t *testing.T) {
	dir := t.TempDir()
	for _, ms := range [][]Mount{
		{{PodPath: "relative", Dir: dir}},
		{{PodPath: "/a/../b", Dir: dir}},
		{{PodPath: "/", Dir: dir}},
		{{PodPath: "/a", Dir: dir}, {PodPath: "/a", Dir: dir}},
		{{PodPath: "/a", Dir: filepath.Join(dir, "missing")}},
	} {
		if f, err := New(ms); err == nil {
			f.Close()
			t.Errorf("New(%+v) worked", ms)
		}
	}
}
