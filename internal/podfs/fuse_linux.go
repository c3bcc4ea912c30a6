package podfs

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pkg/sftp"
)

// cacheFor is how long the kernel may trust what it was told about names and attributes: short, so
// that a ConfigMap update in the pod shows within a second or two, long enough to spare a round trip
// per stat of a busy reader.
const cacheFor = time.Second

// Mount mounts the remote folder root at dir as a FUSE filesystem and returns its server; Unmount
// ends it. Every operation goes to the agent (reads lazily, writes through); when the intercept or
// its session is gone, operations fail with EIO within the Remote's timeouts.
func Mount(dir string, r *Remote, root string, readOnly bool) (*fuse.Server, error) {
	n := &node{r: r, path: root}
	ttl := cacheFor
	opts := &gofs.Options{
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &ttl,
		MountOptions: fuse.MountOptions{
			// Without a fusermount binary (the plugin's rootfs has one file); AllowOther because the
			// containers that use the volume run as any user.
			DirectMount: true,
			AllowOther:  true,
			FsName:      "teledock",
			Name:        "teledock",
			// Larger requests: each one is a round trip to the pod.
			MaxWrite:     1 << 20,
			MaxReadAhead: 1 << 20,
		},
	}
	if readOnly {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	return gofs.Mount(dir, n, opts)
}

// node is a file or folder of the remote tree, known by its path.
type node struct {
	gofs.Inode
	r    *Remote
	path string

	// listed are the attributes of a folder's entries from its last Readdir: READDIRPLUS looks up
	// every entry just after, and a round trip each would make listing a large folder slow.
	mu       sync.Mutex
	listed   map[string]os.FileInfo
	listedAt time.Time
}

// fromListing returns what the last Readdir said of name, if it is fresh.
func (n *node) fromListing(name string) os.FileInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Since(n.listedAt) > cacheFor {
		n.listed = nil
		return nil
	}
	return n.listed[name]
}

var (
	_ gofs.NodeLookuper   = (*node)(nil)
	_ gofs.NodeGetattrer  = (*node)(nil)
	_ gofs.NodeSetattrer  = (*node)(nil)
	_ gofs.NodeReaddirer  = (*node)(nil)
	_ gofs.NodeReadlinker = (*node)(nil)
	_ gofs.NodeOpener     = (*node)(nil)
	_ gofs.NodeCreater    = (*node)(nil)
	_ gofs.NodeMkdirer    = (*node)(nil)
	_ gofs.NodeUnlinker   = (*node)(nil)
	_ gofs.NodeRmdirer    = (*node)(nil)
	_ gofs.NodeRenamer    = (*node)(nil)
	_ gofs.NodeSymlinker  = (*node)(nil)
)

func (n *node) do(ctx context.Context, op func(*sftp.Client) error) syscall.Errno {
	return n.r.errno(n.path, n.r.Do(ctx, op))
}

// errno is errno(err), logging what becomes EIO: the one answer that says nothing of why.
func (r *Remote) errno(p string, err error) syscall.Errno {
	e := errno(err)
	if e == syscall.EIO {
		r.log.Warn("I/O error", "intercept", r.cfg.Intercept, "path", p, "err", err)
	}
	return e
}

// errno maps SFTP and session errors to what a local filesystem would answer; anything that is not
// the file's own answer is EIO.
func errno(err error) syscall.Errno {
	var st *sftp.StatusError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, fs.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, sftp.ErrSSHFxOpUnsupported):
		return syscall.ENOTSUP
	case errors.As(err, &st) && st.FxCode() == sftp.ErrSSHFxFailure:
		// The server's generic failure: not empty, not a folder, and the like.
		return syscall.EPERM
	}
	return syscall.EIO
}

// ino makes an inode number from the path, so that the kernel sees one inode per remote file.
func ino(p string) uint64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, p)
	return h.Sum64() | 1 // never 0 or 1 (the root's)
}

func fillAttr(fi os.FileInfo, a *fuse.Attr) {
	if st, ok := fi.Sys().(*sftp.FileStat); ok {
		a.Mode = st.Mode
		a.Uid, a.Gid = st.UID, st.GID
		a.Atime = uint64(st.Atime)
		a.Mtime = uint64(st.Mtime)
		a.Ctime = uint64(st.Mtime)
	} else {
		a.Mode = uint32(fi.Mode().Perm())
		a.Mtime = uint64(fi.ModTime().Unix())
	}
	a.Size = uint64(fi.Size())
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 128 << 10
	a.Nlink = 1
	if fi.IsDir() {
		a.Nlink = 2
	}
}

func (n *node) child(ctx context.Context, name string, fi os.FileInfo, out *fuse.EntryOut) *gofs.Inode {
	p := path.Join(n.path, name)
	fillAttr(fi, &out.Attr)
	a := gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: ino(p)}
	out.Attr.Ino = a.Ino
	return n.NewInode(ctx, &node{r: n.r, path: p}, a)
}

func (n *node) lstat(ctx context.Context, p string) (fi os.FileInfo, e syscall.Errno) {
	e = n.do(ctx, func(c *sftp.Client) (err error) {
		fi, err = c.Lstat(p)
		return err
	})
	return fi, e
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if fi := n.fromListing(name); fi != nil {
		return n.child(ctx, name, fi, out), 0
	}
	fi, e := n.lstat(ctx, path.Join(n.path, name))
	if e != 0 {
		return nil, e
	}
	return n.child(ctx, name, fi, out), 0
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		var fi os.FileInfo
		e := n.do(ctx, func(*sftp.Client) (err error) {
			fi, err = h.f.Stat()
			return err
		})
		if e == 0 {
			fillAttr(fi, &out.Attr)
			out.Attr.Ino = ino(n.path)
		}
		return e
	}
	fi, e := n.lstat(ctx, n.path)
	if e == 0 {
		fillAttr(fi, &out.Attr)
		out.Attr.Ino = ino(n.path)
	}
	return e
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	e := n.do(ctx, func(c *sftp.Client) error {
		if mode, ok := in.GetMode(); ok {
			if err := c.Chmod(n.path, os.FileMode(mode&0o7777)); err != nil {
				return err
			}
		}
		if size, ok := in.GetSize(); ok {
			if err := c.Truncate(n.path, int64(size)); err != nil {
				return err
			}
		}
		mtime, mok := in.GetMTime()
		atime, aok := in.GetATime()
		if mok || aok {
			if !mok {
				mtime = time.Now()
			}
			if !aok {
				atime = mtime
			}
			if err := c.Chtimes(n.path, atime, mtime); err != nil {
				return err
			}
		}
		return nil
	})
	if e != 0 {
		return e
	}
	return n.Getattr(ctx, fh, out)
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var list []os.FileInfo
	e := n.do(ctx, func(c *sftp.Client) (err error) {
		list, err = c.ReadDir(n.path)
		return err
	})
	if e != 0 {
		return nil, e
	}
	listed := make(map[string]os.FileInfo, len(list))
	entries := make([]fuse.DirEntry, 0, len(list))
	for _, fi := range list {
		listed[fi.Name()] = fi
		var a fuse.Attr
		fillAttr(fi, &a)
		entries = append(entries, fuse.DirEntry{Name: fi.Name(), Mode: a.Mode, Ino: ino(path.Join(n.path, fi.Name()))})
	}
	n.mu.Lock()
	n.listed, n.listedAt = listed, time.Now()
	n.mu.Unlock()
	return gofs.NewListDirStream(entries), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var target string
	e := n.do(ctx, func(c *sftp.Client) (err error) {
		target, err = c.ReadLink(n.path)
		return err
	})
	return []byte(target), e
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h, e := n.open(ctx, n.path, int(flags)&^(syscall.O_CREAT|syscall.O_EXCL))
	return h, 0, e
}

func (n *node) open(ctx context.Context, p string, flags int) (*handle, syscall.Errno) {
	var f *sftp.File
	e := n.do(ctx, func(c *sftp.Client) (err error) {
		f, err = c.OpenFile(p, flags)
		return err
	})
	if e != 0 {
		return nil, e
	}
	return &handle{r: n.r, f: f}, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	p := path.Join(n.path, name)
	h, e := n.open(ctx, p, int(flags)|os.O_CREATE)
	if e != 0 {
		return nil, nil, 0, e
	}
	var fi os.FileInfo
	e = n.do(ctx, func(c *sftp.Client) (err error) {
		if err = c.Chmod(p, os.FileMode(mode&0o7777)); err != nil {
			return err
		}
		fi, err = c.Lstat(p)
		return err
	})
	if e != 0 {
		_ = h.f.Close()
		return nil, nil, 0, e
	}
	return n.child(ctx, name, fi, out), h, 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := path.Join(n.path, name)
	var fi os.FileInfo
	e := n.do(ctx, func(c *sftp.Client) (err error) {
		if err = c.Mkdir(p); err != nil {
			return err
		}
		_ = c.Chmod(p, os.FileMode(mode&0o7777))
		fi, err = c.Lstat(p)
		return err
	})
	if e != 0 {
		return nil, e
	}
	return n.child(ctx, name, fi, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := path.Join(n.path, name)
	var fi os.FileInfo
	e := n.do(ctx, func(c *sftp.Client) (err error) {
		if err = c.Symlink(target, p); err != nil {
			return err
		}
		fi, err = c.Lstat(p)
		return err
	})
	if e != 0 {
		return nil, e
	}
	return n.child(ctx, name, fi, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.do(ctx, func(c *sftp.Client) error { return c.Remove(path.Join(n.path, name)) })
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.do(ctx, func(c *sftp.Client) error { return c.RemoveDirectory(path.Join(n.path, name)) })
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.ENOTSUP // RENAME_EXCHANGE / NOREPLACE have no SFTP equivalent
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	return n.do(ctx, func(c *sftp.Client) error {
		return c.PosixRename(path.Join(n.path, name), path.Join(np.path, newName))
	})
}

// handle is an open remote file. It belongs to the session that opened it: after a reconnect its
// operations fail with EIO, and the file must be opened again.
type handle struct {
	r *Remote
	f *sftp.File

	// ahead is what was read past the last read: sequential readers get it without a round trip,
	// and one large read is many SFTP requests in flight instead of one at a time.
	mu      sync.Mutex
	ahead   []byte
	aheadAt int64
}

// readAhead is how much one read fetches when it misses.
const readAhead = 8 << 20

var (
	_ gofs.FileReader   = (*handle)(nil)
	_ gofs.FileWriter   = (*handle)(nil)
	_ gofs.FileReleaser = (*handle)(nil)
	_ gofs.FileFsyncer  = (*handle)(nil)
	_ gofs.FileFlusher  = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off >= h.aheadAt && off < h.aheadAt+int64(len(h.ahead)) {
		n := copy(dest, h.ahead[off-h.aheadAt:])
		if n == len(dest) || h.aheadAt+int64(len(h.ahead)) < h.aheadAt+readAhead {
			// All of it, or the buffer ends where the file did.
			return fuse.ReadResultData(dest[:n]), 0
		}
	}
	buf := h.ahead
	if cap(buf) < max(len(dest), readAhead) {
		buf = make([]byte, max(len(dest), readAhead))
	}
	buf = buf[:cap(buf)]
	var n int
	err := h.r.Do(ctx, func(*sftp.Client) (err error) {
		n, err = h.f.ReadAt(buf, off)
		return err
	})
	if err != nil && !errors.Is(err, io.EOF) {
		h.ahead = nil
		return nil, h.r.errno(h.f.Name(), err)
	}
	h.ahead, h.aheadAt = buf[:n], off
	return fuse.ReadResultData(dest[:copy(dest, buf[:n])]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	h.ahead = nil // what was read ahead may be what this overwrites
	h.mu.Unlock()
	var n int
	err := h.r.Do(ctx, func(*sftp.Client) (err error) {
		n, err = h.f.WriteAt(data, off)
		return err
	})
	return uint32(n), h.r.errno(h.f.Name(), err)
}

func (h *handle) Flush(context.Context) syscall.Errno { return 0 }

func (h *handle) Fsync(ctx context.Context, _ uint32) syscall.Errno {
	return errno(h.r.Do(ctx, func(*sftp.Client) error {
		err := h.f.Sync()
		if errors.Is(err, sftp.ErrSSHFxOpUnsupported) {
			return nil // the server writes through; there is nothing to flush
		}
		return err
	}))
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	// Closing on a dead session fails; the handle is gone either way.
	_ = h.r.Do(ctx, func(*sftp.Client) error { return h.f.Close() })
	return 0
}
