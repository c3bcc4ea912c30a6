// Package volumes serves an intercepted container's mounts over SFTP, at the paths where that
// container sees them, and nothing else: every path is resolved inside one mount with os.Root, so
// neither ".." nor a symlink leads out of it, and mounts that the pod mounts read-only refuse
// writes. The directories above the mount points ("/", "/etc", ...) are made up and read-only.
package volumes

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pkg/sftp"
)

// Mount is one mount of the intercepted container.
type Mount struct {
	// PodPath is where the app container sees it, e.g. /etc/config.
	PodPath string
	// Dir is where the agent sees the same volume (the injector mounts it there too).
	Dir      string
	ReadOnly bool
}

type mount struct {
	Mount
	root *os.Root
}

// FS is the set of mounts that one SFTP server shows.
type FS struct {
	mounts []*mount // longest PodPath first, so that nested mounts win
}

// New opens the mounts. PodPaths must be absolute, clean and distinct.
func New(mounts []Mount) (*FS, error) {
	f := &FS{}
	for _, m := range mounts {
		if !path.IsAbs(m.PodPath) || path.Clean(m.PodPath) != m.PodPath || m.PodPath == "/" {
			return nil, fmt.Errorf("volumes: mount path %q must be absolute, clean and not /", m.PodPath)
		}
		if slices.ContainsFunc(f.mounts, func(o *mount) bool { return o.PodPath == m.PodPath }) {
			return nil, fmt.Errorf("volumes: mount path %q twice", m.PodPath)
		}
		root, err := os.OpenRoot(m.Dir)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("volumes: %s: %w", m.PodPath, err)
		}
		f.mounts = append(f.mounts, &mount{Mount: m, root: root})
	}
	sort.SliceStable(f.mounts, func(i, j int) bool { return len(f.mounts[i].PodPath) > len(f.mounts[j].PodPath) })
	return f, nil
}

// Close closes the mounts' roots.
func (f *FS) Close() error {
	var errs []error
	for _, m := range f.mounts {
		errs = append(errs, m.root.Close())
	}
	return errors.Join(errs...)
}

// Serve runs one SFTP session on rw until the client ends it.
func (f *FS) Serve(rw io.ReadWriteCloser) error {
	srv := sftp.NewRequestServer(rw, sftp.Handlers{FileGet: f, FilePut: f, FileCmd: f, FileList: f})
	err := srv.Serve()
	_ = srv.Close()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// resolve finds the mount that holds p and p's path inside it ("." for the mount point). m is nil
// for the made-up directories above the mounts.
func (f *FS) resolve(p string) (m *mount, rel string) {
	p = path.Clean("/" + p)
	for _, m := range f.mounts {
		if p == m.PodPath {
			return m, "."
		}
		if strings.HasPrefix(p, m.PodPath+"/") {
			return m, p[len(m.PodPath)+1:]
		}
	}
	return nil, p
}

// children lists the names directly below a made-up directory; ok is false when dir is not above
// any mount.
func (f *FS) children(dir string) (names []string, ok bool) {
	prefix := dir + "/"
	if dir == "/" {
		prefix = "/"
	}
	for _, m := range f.mounts {
		if rest, found := strings.CutPrefix(m.PodPath, prefix); found {
			name, _, _ := strings.Cut(rest, "/")
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, len(names) > 0
}

var (
	errReadOnly = fmt.Errorf("%w: read-only", sftp.ErrSSHFxPermissionDenied)
	errNotFound = sftp.ErrSSHFxNoSuchFile
)

// writable returns the mount for a change to p, or the error to answer with.
func (f *FS) writable(p string) (*mount, string, error) {
	m, rel := f.resolve(p)
	switch {
	case m == nil:
		return nil, "", errReadOnly
	case m.ReadOnly:
		return nil, "", errReadOnly
	}
	return m, rel, nil
}

// Fileread opens a file for reading.
func (f *FS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	m, rel := f.resolve(r.Filepath)
	if m == nil {
		return nil, errNotFound
	}
	return m.root.Open(rel)
}

// Filewrite opens a file for writing.
func (f *FS) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return f.open(r)
}

// OpenFile opens a file for reading and writing (sftp.OpenFileWriter).
func (f *FS) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return f.open(r)
}

func (f *FS) open(r *sftp.Request) (*os.File, error) {
	pf := r.Pflags()
	if !pf.Write && !pf.Creat && !pf.Trunc && !pf.Append {
		m, rel := f.resolve(r.Filepath)
		if m == nil {
			return nil, errNotFound
		}
		return m.root.Open(rel)
	}
	m, rel, err := f.writable(r.Filepath)
	if err != nil {
		return nil, err
	}
	flags := os.O_RDONLY
	switch {
	case pf.Read && pf.Write:
		flags = os.O_RDWR
	case pf.Write:
		flags = os.O_WRONLY
	}
	if pf.Creat {
		flags |= os.O_CREATE
	}
	if pf.Trunc {
		flags |= os.O_TRUNC
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	// Not O_APPEND: the SFTP server writes at offsets (WriteAt), which O_APPEND forbids.
	return m.root.OpenFile(rel, flags, 0o644)
}

// Filecmd changes the tree: setstat, rename, rmdir, remove, mkdir, symlink. Hard links are refused.
func (f *FS) Filecmd(r *sftp.Request) error {
	if r.Method == "Symlink" {
		// Filepath is the link's target, stored as given: following it later stays inside the
		// mount. Target is where the link goes.
		m, lrel, err := f.writable(r.Target)
		if err != nil {
			return err
		}
		return m.root.Symlink(r.Filepath, lrel)
	}
	m, rel, err := f.writable(r.Filepath)
	if err != nil {
		return err
	}
	switch r.Method {
	case "Setstat":
		return setstat(m.root, rel, r)
	case "Rename", "PosixRename":
		tm, trel, err := f.writable(r.Target)
		if err != nil {
			return err
		}
		if tm != m {
			return fmt.Errorf("%w: rename across mounts", sftp.ErrSSHFxOpUnsupported)
		}
		return m.root.Rename(rel, trel)
	case "Rmdir", "Remove":
		if rel == "." {
			return errReadOnly // the mount point itself
		}
		return m.root.Remove(rel)
	case "Mkdir":
		return m.root.Mkdir(rel, 0o755)
	}
	return sftp.ErrSSHFxOpUnsupported
}

// PosixRename is rename that replaces the target (sftp.PosixRenameFileCmder).
func (f *FS) PosixRename(r *sftp.Request) error { return f.Filecmd(r) }

func setstat(root *os.Root, rel string, r *sftp.Request) error {
	attrs := r.Attributes()
	flags := r.AttrFlags()
	if flags.Size {
		file, err := root.OpenFile(rel, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = file.Truncate(int64(attrs.Size))
		if cerr := file.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if flags.Permissions {
		if err := root.Chmod(rel, attrs.FileMode().Perm()); err != nil {
			return err
		}
	}
	if flags.Acmodtime {
		if err := root.Chtimes(rel, time.Unix(int64(attrs.Atime), 0), time.Unix(int64(attrs.Mtime), 0)); err != nil {
			return err
		}
	}
	return nil
}

// Filelist answers List, Stat and Readlink.
func (f *FS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		return f.list(r.Filepath)
	case "Stat":
		return f.stat(r.Filepath, false)
	case "Readlink":
		m, rel := f.resolve(r.Filepath)
		if m == nil {
			return nil, errNotFound
		}
		target, err := m.root.Readlink(rel)
		if err != nil {
			return nil, err
		}
		return listerAt{namedInfo{name: target}}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

// Lstat is Stat without following a last symlink (sftp.LstatFileLister).
func (f *FS) Lstat(r *sftp.Request) (sftp.ListerAt, error) { return f.stat(r.Filepath, true) }

// Readlink returns a symlink's target as stored (sftp.ReadlinkFileLister).
func (f *FS) Readlink(p string) (string, error) {
	m, rel := f.resolve(p)
	if m == nil {
		return "", errNotFound
	}
	return m.root.Readlink(rel)
}

// RealPath cleans a path; symlinks are not resolved (sftp.RealPathFileLister).
func (f *FS) RealPath(p string) (string, error) { return path.Clean("/" + p), nil }

func (f *FS) stat(p string, lstat bool) (sftp.ListerAt, error) {
	m, rel := f.resolve(p)
	if m == nil {
		if _, ok := f.children(rel); !ok && rel != "/" {
			return nil, errNotFound
		}
		return listerAt{dirInfo(path.Base(rel))}, nil
	}
	var fi fs.FileInfo
	var err error
	if lstat {
		fi, err = m.root.Lstat(rel)
	} else {
		fi, err = m.root.Stat(rel)
	}
	if err != nil {
		return nil, err
	}
	return listerAt{fi}, nil
}

func (f *FS) list(p string) (sftp.ListerAt, error) {
	m, rel := f.resolve(p)
	if m == nil {
		names, ok := f.children(rel)
		if !ok && rel != "/" {
			return nil, errNotFound
		}
		var infos listerAt
		for _, n := range names {
			infos = append(infos, dirInfo(n))
		}
		return infos, nil
	}
	dir, err := m.root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	entries, err := dir.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	infos := make(listerAt, 0, len(entries))
	for _, e := range entries {
		// Lstat-like: a symlink is listed as one (ConfigMap keys are symlinks into ..data).
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		infos = append(infos, fi)
	}
	return infos, nil
}

type listerAt []fs.FileInfo

func (l listerAt) ListAt(out []fs.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if n < len(out) {
		return n, io.EOF
	}
	return n, nil
}

// namedInfo carries a Readlink target, which the SFTP server reads from Name.
type namedInfo struct{ name string }

func (n namedInfo) Name() string       { return n.name }
func (n namedInfo) Size() int64        { return 0 }
func (n namedInfo) Mode() fs.FileMode  { return fs.ModeSymlink | 0o777 }
func (n namedInfo) ModTime() time.Time { return time.Time{} }
func (n namedInfo) IsDir() bool        { return false }
func (n namedInfo) Sys() any           { return nil }

// dirInfo is a made-up, read-only directory above the mounts.
type dirInfo string

func (d dirInfo) Name() string       { return string(d) }
func (d dirInfo) Size() int64        { return 0 }
func (d dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (d dirInfo) ModTime() time.Time { return time.Time{} }
func (d dirInfo) IsDir() bool        { return true }
func (d dirInfo) Sys() any           { return nil }
