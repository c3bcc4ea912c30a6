package podfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/pkg/sftp"
)

// Copy keeps a local folder a copy of one remote folder (copy mode): each Sync brings over what
// changed since the last one and removes what the remote no longer has. Files written locally are
// left alone unless the remote changes the same path; the copy is one-way.
type Copy struct {
	Remote *Remote
	From   string // remote folder (the agent's SFTP path of a mount)
	To     string // local folder (a Docker volume in the helper container)

	seen map[string]stamp // relative path -> what was copied
}

// stamp is what tells whether a remote entry changed.
type stamp struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	link  string
}

// SyncStats says what one Sync did.
type SyncStats struct {
	Copied, Removed int
	Bytes           int64
}

// Sync brings the local folder up to date. Files are written to a temporary name and renamed, so a
// reader sees either the old or the new content of a file.
func (c *Copy) Sync(ctx context.Context) (SyncStats, error) {
	var st SyncStats
	if c.seen == nil {
		c.seen = map[string]stamp{}
	}
	now := map[string]stamp{}
	if err := c.walk(ctx, "", now, &st); err != nil {
		return st, err
	}
	// Remove what went away, deepest first so that folders are empty by then.
	var gone []string
	for rel := range c.seen {
		if _, ok := now[rel]; !ok {
			gone = append(gone, rel)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(gone)))
	for _, rel := range gone {
		if err := os.RemoveAll(filepath.Join(c.To, filepath.FromSlash(rel))); err != nil {
			return st, err
		}
		st.Removed++
	}
	c.seen = now
	return st, nil
}

func (c *Copy) walk(ctx context.Context, rel string, now map[string]stamp, st *SyncStats) error {
	var entries []os.FileInfo
	err := c.Remote.Do(ctx, func(sc *sftp.Client) (err error) {
		entries, err = sc.ReadDir(path.Join(c.From, rel))
		return err
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", path.Join(c.From, rel), err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := path.Join(rel, e.Name())
		s := stamp{mode: e.Mode(), size: e.Size(), mtime: e.ModTime()}
		local := filepath.Join(c.To, filepath.FromSlash(r))
		switch {
		case e.Mode()&fs.ModeSymlink != 0:
			err = c.Remote.Do(ctx, func(sc *sftp.Client) (err error) {
				s.link, err = sc.ReadLink(path.Join(c.From, r))
				return err
			})
			if err == nil && c.seen[r] != s {
				err = replaceSymlink(s.link, local)
				st.Copied++
			}
		case e.IsDir():
			err = os.Mkdir(local, e.Mode().Perm()|0o700)
			if errors.Is(err, fs.ErrExist) {
				err = nil
			}
			if err == nil {
				_ = os.Chmod(local, e.Mode().Perm())
				err = c.walk(ctx, r, now, st)
			}
		case e.Mode().IsRegular():
			if c.seen[r] != s {
				var n int64
				n, err = c.copyFile(ctx, r, local, e.Mode().Perm())
				st.Copied++
				st.Bytes += n
			}
		default:
			continue // devices, sockets, pipes: nothing to copy
		}
		if err != nil {
			return err
		}
		now[r] = s
	}
	return nil
}

func (c *Copy) copyFile(ctx context.Context, rel, local string, perm fs.FileMode) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(local), ".teledock-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	var n int64
	err = c.Remote.Do(ctx, func(sc *sftp.Client) error {
		f, err := sc.Open(path.Join(c.From, rel))
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := tmp.Truncate(0); err != nil {
			return err
		}
		n, err = f.WriteTo(tmp)
		return err
	})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err == nil {
		// A folder in the way (the remote replaced one by a file) goes first.
		if st, serr := os.Lstat(local); serr == nil && st.IsDir() {
			_ = os.RemoveAll(local)
		}
		err = os.Rename(tmp.Name(), local)
	}
	if err != nil {
		return n, fmt.Errorf("copy %s: %w", path.Join(c.From, rel), err)
	}
	return n, nil
}

// replaceSymlink points local at target, as one rename.
func replaceSymlink(target, local string) error {
	tmp := filepath.Join(filepath.Dir(local), ".teledock-link-"+filepath.Base(local))
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if st, err := os.Lstat(local); err == nil && st.IsDir() {
		_ = os.RemoveAll(local)
	}
	return os.Rename(tmp, local)
}

// The copy helper container (`teledock-daemon volume-copy`) is configured by its environment; the
// token is TELEDOCK_TOKEN, as for the daemon.
const (
	EnvDaemon    = "TELEDOCK_VOLUMES_DAEMON"    // the daemon's API as the helper reaches it
	EnvIntercept = "TELEDOCK_VOLUMES_INTERCEPT" // the intercept's name
	EnvCopies    = "TELEDOCK_VOLUMES_COPIES"    // JSON []CopyPair
	EnvRefresh   = "TELEDOCK_VOLUMES_REFRESH"   // how often to refresh, a Go duration (default 5s)
	// ReadyFile is created in the helper's own filesystem once the first copy is complete; its
	// health check looks for it.
	ReadyFile = "/teledock-volumes-ready"
)

// CopyPair is one mount to copy: the agent's SFTP path and the folder (a volume) in the helper.
type CopyPair struct {
	From string `json:"from"`
	To   string `json:"to"`
}
