package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// epoch is every timestamp in an archive: the same binary must always give the same layer, config
// and so image ID, which makes a second load a no-op.
var epoch = time.Unix(0, 0).UTC()

// defaultPath is what BuildKit puts in the config of a FROM scratch image; kept for parity with
// `make images`.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Source is a binary: its size, and a way to read it from the start, as often as needed (an archive
// reads it once for its digest and once per write, rather than holding it in memory).
type Source struct {
	Size int64
	Open func() (io.ReadCloser, error)
}

// Archive is one image in `docker save` format (manifest.json, the config, one uncompressed layer),
// which `docker load` (Engine 20.10 and newer) and `ctr images import` both read.
type Archive struct {
	ref         string
	src         Source
	binary      string
	layerDigest digest.Digest
	layerSize   int64
	config      []byte
	manifest    []byte
}

// New describes the image of spec, tagged version, for linux/arch, with src as its binary. It reads
// src once to compute the layer's digest.
func New(spec Spec, version, arch string, src Source) (*Archive, error) {
	if spec.Repository == "" || spec.Binary == "" || version == "" || arch == "" || src.Open == nil {
		return nil, errors.New("images: incomplete spec, version, arch or source")
	}
	a := &Archive{ref: spec.Ref(version), src: src, binary: spec.Binary, layerSize: layerSize(src.Size)}
	h := sha256.New()
	if err := a.writeLayer(h); err != nil {
		return nil, err
	}
	a.layerDigest = digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil)))

	created := epoch
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: arch},
		Config: ocispec.ImageConfig{
			User:       spec.User,
			Env:        []string{defaultPath},
			Entrypoint: []string{"/" + spec.Binary},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{a.layerDigest}},
		History: []ocispec.History{{
			Created:   &created,
			CreatedBy: fmt.Sprintf("COPY %s /%s # teledock", spec.Binary, spec.Binary),
			Comment:   "teledock " + version,
		}},
	}
	var err error
	if a.config, err = json.Marshal(cfg); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	a.manifest, err = json.Marshal([]manifestEntry{{
		Config:   a.configName(),
		RepoTags: []string{a.ref},
		Layers:   []string{a.layerName()},
	}})
	if err != nil {
		return nil, fmt.Errorf("image manifest: %w", err)
	}
	return a, nil
}

// manifestEntry is one image in a `docker save` manifest.json.
type manifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Ref is the image's reference, REPOSITORY:VERSION.
func (a *Archive) Ref() string { return a.ref }

// ID is the image's ID as Docker shows it: the digest of its config.
func (a *Archive) ID() string { return digest.FromBytes(a.config).String() }

// Size is the archive's size in bytes.
func (a *Archive) Size() int64 {
	return 3*tarHeader + padded(a.layerSize) + padded(int64(len(a.config))) + padded(int64(len(a.manifest))) + tarTrailer
}

func (a *Archive) configName() string { return digest.FromBytes(a.config).Encoded() + ".json" }
func (a *Archive) layerName() string  { return a.layerDigest.Encoded() + "/layer.tar" }

// WriteTo writes the archive, reading the binary once.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	if err := tw.WriteHeader(fileHeader(a.layerName(), a.layerSize, 0o644)); err != nil {
		return cw.n, err
	}
	if err := a.writeLayer(tw); err != nil {
		return cw.n, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{a.configName(), a.config}, {"manifest.json", a.manifest}} {
		if err := tw.WriteHeader(fileHeader(f.name, int64(len(f.data)), 0o644)); err != nil {
			return cw.n, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return cw.n, err
		}
	}
	err := tw.Close()
	return cw.n, err
}

// Reader streams the archive through a pipe, for APIs that take a reader (ImageLoad, an exec's
// stdin); closing it stops the writer.
func (a *Archive) Reader() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		_, err := a.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	return pr
}

// writeLayer writes the layer tar: the binary at / with mode 0755, owned by root.
func (a *Archive) writeLayer(w io.Writer) error {
	rc, err := a.src.Open()
	if err != nil {
		return fmt.Errorf("open %s: %w", a.binary, err)
	}
	defer rc.Close()
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(fileHeader(a.binary, a.src.Size, 0o755)); err != nil {
		return fmt.Errorf("layer of %s: %w", a.ref, err)
	}
	// The tar writer refuses more than Size bytes; fewer shows at Close.
	if _, err := io.Copy(tw, rc); err != nil {
		return fmt.Errorf("layer of %s: read %s: %w", a.ref, a.binary, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("layer of %s: %w", a.ref, err)
	}
	return nil
}

// A USTAR header is one block, and a tar ends with two zero blocks; fileHeader keeps every header
// within USTAR so that sizes are known before anything is written.
const (
	tarBlock   = 512
	tarHeader  = tarBlock
	tarTrailer = 2 * tarBlock
)

func padded(n int64) int64 { return (n + tarBlock - 1) / tarBlock * tarBlock }

func layerSize(binSize int64) int64 { return tarHeader + padded(binSize) + tarTrailer }

func fileHeader(name string, size int64, mode int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     mode,
		ModTime:  epoch,
		Format:   tar.FormatUSTAR,
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
