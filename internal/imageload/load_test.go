package imageload

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

type fakeArchive struct{ ref, data string }

func (a fakeArchive) Ref() string           { return a.ref }
func (a fakeArchive) Reader() io.ReadCloser { return io.NopCloser(strings.NewReader(a.data)) }

// fakeDocker records loads into the engine and execs into nodes; an exec reads all its stdin,
// answers on stdout and exits with exitCode.
type fakeDocker struct {
	fakeLister
	t        testing.TB
	exitCode int
	loadErr  string // an error message in the load's JSON stream

	mu     sync.Mutex
	loaded []string // data loaded into the engine
	execs  []string // "container: cmd <- stdin"
	last   string
}

func (f *fakeDocker) ImageLoad(_ context.Context, r io.Reader, _ ...client.ImageLoadOption) (image.LoadResponse, error) {
	b, _ := io.ReadAll(r)
	f.mu.Lock()
	f.loaded = append(f.loaded, string(b))
	f.mu.Unlock()
	body := `{"stream":"Loaded image: x\n"}` + "\n"
	if f.loadErr != "" {
		body += fmt.Sprintf(`{"errorDetail":{"message":%q},"error":%q}`, f.loadErr, f.loadErr) + "\n"
	}
	return image.LoadResponse{Body: io.NopCloser(strings.NewReader(body)), JSON: true}, nil
}

func (f *fakeDocker) ContainerExecCreate(_ context.Context, ctr string, o container.ExecOptions) (container.ExecCreateResponse, error) {
	if !o.AttachStdin || !o.AttachStdout {
		f.t.Errorf("exec without stdin or stdout attached: %+v", o)
	}
	f.mu.Lock()
	f.last = ctr + ": " + strings.Join(o.Cmd, " ")
	f.mu.Unlock()
	return container.ExecCreateResponse{ID: "exec1"}, nil
}

func (f *fakeDocker) ContainerExecAttach(context.Context, string, container.ExecAttachOptions) (types.HijackedResponse, error) {
	// A TCP pair, for the half-close that ends stdin.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return types.HijackedResponse{}, err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return types.HijackedResponse{}, err
	}
	srv := <-accepted
	go func() {
		defer srv.Close()
		stdin, _ := io.ReadAll(srv)
		f.mu.Lock()
		f.execs = append(f.execs, f.last+" <- "+string(stdin))
		f.mu.Unlock()
		w := stdcopy.NewStdWriter(srv, stdcopy.Stdout)
		fmt.Fprintf(w, "read %d bytes\n", len(stdin))
	}()
	return types.NewHijackedResponse(conn, ""), nil
}

func (f *fakeDocker) ContainerExecInspect(context.Context, string) (container.ExecInspect, error) {
	return container.ExecInspect{ExitCode: f.exitCode}, nil
}

var _ Docker = (*fakeDocker)(nil)

func TestLoad(t *testing.T) {
	archives := []Archive{fakeArchive{"teledock/traffic-manager:v1", "TM"}, fakeArchive{"teledock/traffic-agent:v1", "TA"}}
	tests := []struct {
		name       string
		cluster    Cluster
		wantLoaded []string
		wantExecs  []string
		wantEvents []string
	}{
		{name: "kind", cluster: Cluster{Type: Kind, Nodes: []Node{{Container: "k1", Name: "dev-control-plane"}, {Container: "k2", Name: "dev-worker"}}},
			wantExecs: []string{
				"k1: ctr -n k8s.io images import - <- TM", "k1: ctr -n k8s.io images import - <- TA",
				"k2: ctr -n k8s.io images import - <- TM", "k2: ctr -n k8s.io images import - <- TA"},
			wantEvents: []string{
				"teledock/traffic-manager:v1@dev-control-plane", "teledock/traffic-agent:v1@dev-control-plane",
				"teledock/traffic-manager:v1@dev-worker", "teledock/traffic-agent:v1@dev-worker"}},
		{name: "minikube with docker", cluster: Cluster{Type: Minikube, Nodes: []Node{{Container: "m1", Name: "minikube", Loader: LoaderDocker}}},
			wantExecs:  []string{"m1: docker load <- TM", "m1: docker load <- TA"},
			wantEvents: []string{"teledock/traffic-manager:v1@minikube", "teledock/traffic-agent:v1@minikube"}},
		{name: "docker desktop", cluster: Cluster{Type: DockerDesktop},
			wantLoaded: []string{"TM", "TA"},
			wantEvents: []string{"teledock/traffic-manager:v1@", "teledock/traffic-agent:v1@"}},
		{name: "unknown", cluster: Cluster{Type: Unknown}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDocker{t: t}
			var events []string
			err := Load(context.Background(), f, tt.cluster, archives, func(e Event) { events = append(events, e.Image+"@"+e.Node) })
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.loaded, tt.wantLoaded) || !slices.Equal(f.execs, tt.wantExecs) || !slices.Equal(events, tt.wantEvents) {
				t.Errorf("loaded %q, execs %q, events %q;\nwant %q, %q, %q", f.loaded, f.execs, events, tt.wantLoaded, tt.wantExecs, tt.wantEvents)
			}
		})
	}
}

func TestLoadFails(t *testing.T) {
	a := []Archive{fakeArchive{"teledock/traffic-agent:v1", "TA"}}
	f := &fakeDocker{t: t, exitCode: 1}
	err := Load(context.Background(), f, Cluster{Type: Kind, Nodes: []Node{{Container: "k1", Name: "dev-control-plane"}}}, a, nil)
	if err == nil || !strings.Contains(err.Error(), "dev-control-plane") || !strings.Contains(err.Error(), "exited with 1: read 2 bytes") {
		t.Errorf("a failing ctr: %v", err)
	}
	f = &fakeDocker{t: t, loadErr: "unsupported os"}
	if err := Load(context.Background(), f, Cluster{Type: DockerDesktop}, a, nil); err == nil || !strings.Contains(err.Error(), "unsupported os") {
		t.Errorf("an engine that refuses the archive: %v", err)
	}
}

func TestLoadResult(t *testing.T) {
	if err := loadResult(bytes.NewReader(nil)); err != nil {
		t.Errorf("empty answer: %v", err)
	}
	if err := loadResult(bufio.NewReader(strings.NewReader("{not json"))); err == nil {
		t.Error("garbage: no error")
	}
}
