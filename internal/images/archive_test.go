package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func bytesSource(b []byte) Source {
	return Source{Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}

// readTar returns a tar's regular files by name, failing on anything else.
func readTar(t testing.TB, data []byte) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, headers := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, headers
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			t.Fatalf("tar entry %s has type %c", h.Name, h.Typeflag)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], headers[h.Name] = b, h
	}
}

func TestArchive(t *testing.T) {
	bin := bytes.Repeat([]byte("\x7fELF teledock "), 1000) // not a multiple of 512
	tests := []struct {
		spec Spec
		arch string
	}{
		{Daemon, "amd64"},
		{TrafficManager, "arm64"},
		{TrafficAgent, "amd64"},
	}
	for _, tt := range tests {
		t.Run(tt.spec.Repository, func(t *testing.T) {
			a, err := New(tt.spec, "v1.2.3", tt.arch, bytesSource(bin))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			n, err := a.WriteTo(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(buf.Len()) || n != a.Size() {
				t.Errorf("WriteTo = %d bytes, wrote %d, Size() = %d", n, buf.Len(), a.Size())
			}
			files, _ := readTar(t, buf.Bytes())

			var manifest []manifestEntry
			if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
				t.Fatalf("manifest.json: %v", err)
			}
			if len(manifest) != 1 || len(manifest[0].Layers) != 1 || len(manifest[0].RepoTags) != 1 {
				t.Fatalf("manifest = %+v", manifest)
			}
			m := manifest[0]
			if want := tt.spec.Repository + ":v1.2.3"; m.RepoTags[0] != want || a.Ref() != want {
				t.Errorf("tags %v, Ref %s; want %s", m.RepoTags, a.Ref(), want)
			}
			configData := files[m.Config]
			if sum := sha256.Sum256(configData); "sha256:"+hex.EncodeToString(sum[:]) != a.ID() ||
				m.Config != hex.EncodeToString(sum[:])+".json" {
				t.Errorf("config %s, ID %s: not the config's digest", m.Config, a.ID())
			}
			var cfg ocispec.Image
			if err := json.Unmarshal(configData, &cfg); err != nil {
				t.Fatalf("config: %v", err)
			}
			if cfg.OS != "linux" || cfg.Architecture != tt.arch {
				t.Errorf("platform %s/%s, want linux/%s", cfg.OS, cfg.Architecture, tt.arch)
			}
			if got := strings.Join(cfg.Config.Entrypoint, " "); got != "/"+tt.spec.Binary {
				t.Errorf("entrypoint %q", got)
			}
			if cfg.Config.User != tt.spec.User {
				t.Errorf("user %q, want %q", cfg.Config.User, tt.spec.User)
			}
			if cfg.Created == nil || !cfg.Created.Equal(epoch) {
				t.Errorf("created %v, want the fixed %v", cfg.Created, epoch)
			}

			layer := files[m.Layers[0]]
			sum := sha256.Sum256(layer)
			if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0].Encoded() != hex.EncodeToString(sum[:]) ||
				m.Layers[0] != hex.EncodeToString(sum[:])+"/layer.tar" {
				t.Errorf("diff_ids %v, layer %s: not the layer's digest %x", cfg.RootFS.DiffIDs, m.Layers[0], sum)
			}
			lfiles, lheaders := readTar(t, layer)
			if len(lfiles) != 1 || !bytes.Equal(lfiles[tt.spec.Binary], bin) {
				t.Fatalf("layer holds %d files; want only %s with the binary", len(lfiles), tt.spec.Binary)
			}
			h := lheaders[tt.spec.Binary]
			if h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) {
				t.Errorf("binary's header: mode %o, owner %d:%d, mtime %v", h.Mode, h.Uid, h.Gid, h.ModTime)
			}
		})
	}
}

func TestArchiveDeterministic(t *testing.T) {
	bin := []byte("binary one")
	write := func(b []byte) (string, []byte) {
		a, err := New(TrafficAgent, "v1", "amd64", bytesSource(b))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := a.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		// Reader gives the same bytes as WriteTo.
		r := a.Reader()
		defer r.Close()
		piped, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(piped, buf.Bytes()) {
			t.Errorf("Reader: %d bytes, %v; WriteTo: %d bytes", len(piped), err, buf.Len())
		}
		return a.ID(), buf.Bytes()
	}
	id1, data1 := write(bin)
	id2, data2 := write(bytes.Clone(bin))
	if id1 != id2 || !bytes.Equal(data1, data2) {
		t.Errorf("the same binary gave two images: %s, %s", id1, id2)
	}
	if id3, _ := write([]byte("binary two")); id3 == id1 {
		t.Errorf("another binary gave the same image ID %s", id3)
	}
}

func TestArchiveSourceSizeWrong(t *testing.T) {
	for _, size := range []int64{5, 50} { // the binary has 10 bytes
		src := bytesSource([]byte("0123456789"))
		src.Size = size
		if _, err := New(Daemon, "v1", "amd64", src); err == nil {
			t.Errorf("size %d for a 10-byte binary: no error", size)
		}
	}
}

func TestArchiveSourceFails(t *testing.T) {
	boom := errors.New("boom")
	src := Source{Size: 3, Open: func() (io.ReadCloser, error) { return nil, boom }}
	if _, err := New(Daemon, "v1", "amd64", src); !errors.Is(err, boom) {
		t.Errorf("New = %v, want %v", err, boom)
	}
}

// TestSpecsMatchDockerfiles keeps the specs and the Dockerfiles that `make images` builds in step.
func TestSpecsMatchDockerfiles(t *testing.T) {
	dockerfiles := map[Spec]string{
		Daemon:         "../../daemoncontainer/Dockerfile",
		TrafficManager: "../../cluster/Dockerfile",
		TrafficAgent:   "../../agent/Dockerfile",
	}
	if len(dockerfiles) != len(Specs()) {
		t.Fatalf("%d Dockerfiles for %d specs", len(dockerfiles), len(Specs()))
	}
	for _, s := range Specs() {
		data, err := os.ReadFile(filepath.FromSlash(dockerfiles[s]))
		if err != nil {
			t.Fatal(err)
		}
		df := string(data)
		want := []string{
			"FROM scratch",
			"COPY " + s.Binary + " /" + s.Binary,
			`ENTRYPOINT ["/` + s.Binary + `"]`,
		}
		if s.User != "" {
			want = append(want, "USER "+s.User)
		}
		for _, w := range want {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(w) + `$`).MatchString(df) {
				t.Errorf("%s lacks %q", dockerfiles[s], w)
			}
		}
		if s.User == "" && regexp.MustCompile(`(?m)^USER `).MatchString(df) {
			t.Errorf("%s sets a USER that %s lacks", dockerfiles[s], s.Repository)
		}
	}
}
