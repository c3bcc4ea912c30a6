package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"teledock.dev/teledock/cluster/install"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/images"
	"teledock.dev/teledock/internal/registry"
	"teledock.dev/teledock/internal/version"
)

// fakeImageEngine has the images in present and the containers in containers; it records what
// is loaded (by the tag in the archive) and fails every exec.
type fakeImageEngine struct {
	present    map[string]bool
	inspectErr error
	containers []container.Summary
	loaded     []string
	execs      []string
	pushed     []string // "local -> remote"
	pushErr    string   // an error the push's progress stream reports
}

func (f *fakeImageEngine) ImageTag(_ context.Context, source, target string) error {
	f.pushed = append(f.pushed, source+" -> "+target)
	return nil
}

func (f *fakeImageEngine) ImagePush(context.Context, string, image.PushOptions) (io.ReadCloser, error) {
	if f.pushErr != "" {
		return io.NopCloser(strings.NewReader(`{"errorDetail":{"message":"` + f.pushErr + `"}}`)), nil
	}
	return io.NopCloser(strings.NewReader(`{"status":"pushed"}`)), nil
}

func (f *fakeImageEngine) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if f.inspectErr != nil {
		return image.InspectResponse{}, f.inspectErr
	}
	if !f.present[ref] {
		return image.InspectResponse{}, cerrdefs.ErrNotFound.WithMessage("no such image: " + ref)
	}
	return image.InspectResponse{ID: "sha256:x"}, nil
}

func (f *fakeImageEngine) ServerVersion(context.Context) (types.Version, error) {
	return types.Version{Arch: "amd64"}, nil
}

func (f *fakeImageEngine) ImageLoad(_ context.Context, r io.Reader, _ ...client.ImageLoadOption) (image.LoadResponse, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return image.LoadResponse{}, err
	}
	// The archive's manifest.json names its tag.
	for _, s := range images.Specs() {
		if bytes.Contains(data, []byte(`"RepoTags":["`+s.Ref(version.Version)+`"]`)) {
			f.loaded = append(f.loaded, s.Ref(version.Version))
		}
	}
	return image.LoadResponse{Body: io.NopCloser(strings.NewReader(`{"stream":"Loaded"}`))}, nil
}

func (f *fakeImageEngine) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return f.containers, nil
}

func (f *fakeImageEngine) ContainerExecCreate(_ context.Context, ctr string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	f.execs = append(f.execs, ctr+": "+strings.Join(o.Cmd, " "))
	return container.ExecCreateResponse{}, errors.New("no exec in this fake")
}

func (f *fakeImageEngine) ContainerExecAttach(context.Context, string, container.ExecAttachOptions) (types.HijackedResponse, error) {
	return types.HijackedResponse{}, errors.New("no exec in this fake")
}

func (f *fakeImageEngine) ContainerExecInspect(context.Context, string) (container.ExecInspect, error) {
	return container.ExecInspect{}, errors.New("no exec in this fake")
}

var _ imageEngine = (*fakeImageEngine)(nil)

// carriedFake carries every image, with a tiny binary.
func carriedFake(s images.Spec, v, arch string) (*images.Archive, error) {
	bin := []byte("binary of " + s.Binary)
	return images.New(s, v, arch, images.Source{Size: int64(len(bin)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(bin)), nil
	}})
}

func carriedNone(images.Spec, string, string) (*images.Archive, error) {
	return nil, images.ErrNotCarried
}

func imageDeps(eng *fakeImageEngine, carried carriedFunc, cluster install.Cluster) (deps, *bytes.Buffer) {
	var stderr bytes.Buffer
	return deps{
		stderr:  &stderr,
		log:     slog.New(slog.DiscardHandler),
		images:  func() (imageEngine, error) { return eng, nil },
		carried: carried,
		describe: func(context.Context, install.Config) (install.Cluster, error) {
			return cluster, nil
		},
	}, &stderr
}

func TestEnsureDaemonImage(t *testing.T) {
	ref := images.Daemon.Ref(version.Version)
	tests := []struct {
		name       string
		given      bool
		present    bool
		inspectErr error
		carried    carriedFunc
		wantLoaded bool
		wantKind   string // "" for no error
	}{
		{name: "missing: loaded from the CLI", carried: carriedFake, wantLoaded: true},
		{name: "present", present: true, carried: carriedFake},
		{name: "given by the user: never loaded", given: true, carried: carriedFake},
		{name: "missing and not carried", carried: carriedNone, wantKind: "IMAGE_NOT_FOUND"},
		{name: "engine fails", inspectErr: errors.New("boom"), carried: carriedFake, wantKind: "ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeImageEngine{present: map[string]bool{ref: tt.present}, inspectErr: tt.inspectErr}
			d, stderr := imageDeps(eng, tt.carried, install.Cluster{})
			err := ensureDaemonImage(context.Background(), d, tt.given)
			switch {
			case tt.wantKind == "" && err != nil:
				t.Fatalf("ensureDaemonImage: %v", err)
			case tt.wantKind != "" && (err == nil || kindOf(err).code != tt.wantKind):
				t.Fatalf("ensureDaemonImage = %v, want a %s error", err, tt.wantKind)
			}
			if tt.wantKind == "IMAGE_NOT_FOUND" && (!errors.Is(err, launcher.ErrImageNotFound) || !strings.Contains(hint(err), "make build")) {
				t.Errorf("error %v, hint %q: should say how to get the image", err, hint(err))
			}
			loaded := slices.Equal(eng.loaded, []string{ref})
			if loaded != tt.wantLoaded || (!tt.wantLoaded && len(eng.loaded) > 0) {
				t.Errorf("loaded %v, want loaded: %v", eng.loaded, tt.wantLoaded)
			}
			if said := strings.Contains(stderr.String(), "Loading "+ref+" into the local Docker engine"); said != tt.wantLoaded {
				t.Errorf("stderr %q", stderr.String())
			}
		})
	}
}

func TestClusterImages(t *testing.T) {
	tm, ta := images.TrafficManager.Ref(version.Version), images.TrafficAgent.Ref(version.Version)
	both := []images.Spec{images.TrafficManager, images.TrafficAgent}
	kindNode := container.Summary{ID: "k1", Names: []string{"/dev-control-plane"},
		Labels: map[string]string{"io.x-k8s.kind.cluster": "dev", "io.x-k8s.kind.role": "control-plane"}}
	desktop := install.Cluster{Context: "docker-desktop", Server: "https://kubernetes.docker.internal:6443"}
	remote := install.Cluster{Context: "gke", Server: "https://34.1.2.3"}
	advertising := install.Cluster{Context: "dev", Server: "https://127.0.0.1:6443",
		Registry: &registry.Hosting{Host: "localhost:5001", HostFromContainerRuntime: "registry.local:5000"}}
	tests := []struct {
		name       string
		cluster    install.Cluster
		wanted     []images.Spec
		registry   string // --registry
		present    []string
		pushErr    string
		carried    carriedFunc
		wantHost   string
		wantLoaded []string
		wantPushed []string
		wantExecs  []string
		wantErr    string // the error kind
		wantStderr string
	}{
		{name: "docker desktop", cluster: desktop, wanted: both,
			carried: carriedFake, wantLoaded: []string{tm, ta}, wantStderr: "Loading " + ta + " into the local Docker engine (docker-desktop)"},
		{name: "user's manager image", cluster: desktop, wanted: []images.Spec{images.TrafficAgent},
			carried: carriedFake, wantLoaded: []string{ta}},
		{name: "user's images", cluster: remote, carried: carriedFake},
		{name: "remote cluster, no registry", cluster: remote, wanted: both, carried: carriedFake, wantErr: "NO_IMAGE_ROUTE"},
		{name: "not carried", cluster: desktop, wanted: both,
			carried: carriedNone, wantStderr: "its nodes need " + tm + " and " + ta + " already"},
		{name: "kind node fails", cluster: install.Cluster{Context: "kind-dev", Server: "https://10.0.0.1:6443"},
			wanted: both, carried: carriedFake,
			wantExecs: []string{"k1: ctr -n k8s.io images import -"}, wantErr: "IMAGE_LOAD_FAILED",
			wantStderr: "Loading " + tm + " into node dev-control-plane\n"},
		{name: "--registry", cluster: remote, wanted: both, registry: "ghcr.io/me", present: []string{tm, ta}, carried: carriedNone,
			wantHost: "ghcr.io/me", wantPushed: []string{tm + " -> ghcr.io/me/" + tm, ta + " -> ghcr.io/me/" + ta}, wantStderr: "Pushing ghcr.io/me/" + ta},
		{name: "--registry wins over a local cluster", cluster: desktop, wanted: []images.Spec{images.TrafficAgent}, registry: "reg:5000",
			carried: carriedFake, wantHost: "reg:5000", wantLoaded: []string{ta}, wantPushed: []string{ta + " -> reg:5000/" + ta}},
		{name: "--registry, images neither in the engine nor carried", cluster: remote, wanted: both, registry: "reg:5000",
			carried: carriedNone, wantErr: "IMAGE_NOT_FOUND"},
		{name: "push refused", cluster: remote, wanted: both, registry: "reg:5000", present: []string{tm, ta}, pushErr: "denied: requested access to the resource is denied",
			carried: carriedNone, wantErr: "IMAGE_PUSH_FAILED", wantPushed: []string{tm + " -> reg:5000/" + tm}},
		{name: "advertised registry", cluster: advertising, wanted: both, present: []string{tm}, carried: carriedFake,
			wantHost: "registry.local:5000", wantLoaded: []string{ta}, wantPushed: []string{tm + " -> localhost:5001/" + tm, ta + " -> localhost:5001/" + ta},
			wantStderr: "The cluster advertises the registry localhost:5001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeImageEngine{containers: []container.Summary{kindNode}, present: map[string]bool{}, pushErr: tt.pushErr}
			for _, p := range tt.present {
				eng.present[p] = true
			}
			d, stderr := imageDeps(eng, tt.carried, tt.cluster)
			host, err := clusterImages(context.Background(), d, install.Config{}, tt.wanted, tt.registry)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || kindOf(err).code != tt.wantErr) {
				t.Fatalf("clusterImages = %v, want kind %q", err, tt.wantErr)
			}
			if host != tt.wantHost {
				t.Errorf("registry host %q, want %q", host, tt.wantHost)
			}
			if !slices.Equal(eng.loaded, tt.wantLoaded) || !slices.Equal(eng.execs, tt.wantExecs) || !slices.Equal(eng.pushed, tt.wantPushed) {
				t.Errorf("loaded %v, execs %v, pushed %v; want %v, %v, %v", eng.loaded, eng.execs, eng.pushed, tt.wantLoaded, tt.wantExecs, tt.wantPushed)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.wantStderr)
			}
			if tt.wantErr == "NO_IMAGE_ROUTE" && !strings.Contains(hint(err), "--registry") {
				t.Errorf("hint %q does not name --registry", hint(err))
			}
		})
	}
}
