//go:build teledockimages

package images

import (
	"compress/gzip"
	"embed"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// payload holds the image binaries, gzip'd, as payload/linux_ARCH/BINARY.gz; `make build` puts
// them there (the folder is not in git) and builds the CLI with the teledockimages tag.
//
//go:embed payload/linux_*/*.gz
var payload embed.FS

func payloadSource(bin, arch string) (Source, bool) {
	name := path.Join("payload", "linux_"+arch, bin+".gz")
	size, err := gzipSize(name)
	if err != nil {
		return Source{}, false
	}
	return Source{Size: size, Open: func() (io.ReadCloser, error) {
		// An embedded file reads from the binary's own data: nothing is copied but what gzip
		// inflates as it goes.
		f, err := payload.Open(name)
		if err != nil {
			return nil, err
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return readCloser{zr, f}, nil
	}}, true
}

// gzipSize reads the uncompressed size from gzip's trailer (mod 2^32; a binary is far smaller):
// the archive needs it before it reads the binary.
func gzipSize(name string) (int64, error) {
	f, err := payload.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	ra, ok := f.(io.ReaderAt)
	if !ok || st.Size() < 18 { // a gzip header and trailer at least
		return 0, fmt.Errorf("%s: not a gzip file", name)
	}
	var trailer [4]byte
	if _, err := ra.ReadAt(trailer[:], st.Size()-4); err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return int64(binary.LittleEndian.Uint32(trailer[:])), nil
}

// readCloser closes the gzip reader and the file under it.
type readCloser struct {
	*gzip.Reader
	f io.Closer
}

func (r readCloser) Close() error {
	err := r.Reader.Close()
	if ferr := r.f.Close(); err == nil {
		err = ferr
	}
	return err
}

func payloadArchs() []string {
	dirs, err := fs.ReadDir(payload, "payload")
	if err != nil {
		return nil
	}
	var archs []string
	for _, d := range dirs {
		if arch, ok := strings.CutPrefix(d.Name(), "linux_"); ok && d.IsDir() {
			archs = append(archs, arch)
		}
	}
	sort.Strings(archs)
	return archs
}
