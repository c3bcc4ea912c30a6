package launcher

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeDocker records calls and fails the one named in failOn.
type fakeDocker struct {
	failOn  string
	calls   []string
	config  *container.Config
	host    *container.HostConfig
	copied  map[string]string // path in archive -> content
	removed []string
}

func (f *fakeDocker) call(name string) error {
	f.calls = append(f.calls, name)
	if f.failOn == name {
		return fmt.Errorf("%s failed", name)
	}
	return nil
}

func (f *fakeDocker) ContainerCreate(_ context.Context, cfg *container.Config, host *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	f.config, f.host = cfg, host
	if f.failOn == "image" {
		return container.CreateResponse{}, cerrdefs.ErrNotFound.WithMessage("No such image")
	}
	return container.CreateResponse{ID: "id-" + name}, f.call("create")
}

func (f *fakeDocker) CopyToContainer(_ context.Context, _, dst string, content io.Reader, _ container.CopyToContainerOptions) error {
	f.copied = map[string]string{}
	tr := tar.NewReader(content)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(tr)
		f.copied[dst+h.Name] = fmt.Sprintf("%o:%s", h.Mode, b)
	}
	return f.call("copy")
}

func (f *fakeDocker) ContainerStart(context.Context, string, container.StartOptions) error {
	return f.call("start")
}

func (f *fakeDocker) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	if err := f.call("inspect"); err != nil {
		return container.InspectResponse{}, err
	}
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID:    id,
			Name:  "/teledock-daemon-default",
			State: &container.State{Status: "running", Running: true},
		},
		Config: f.config,
		NetworkSettings: &container.NetworkSettings{NetworkSettingsBase: container.NetworkSettingsBase{
			Ports: nat.PortMap{"7777/tcp": {{HostIP: "127.0.0.1", HostPort: "49153"}}},
		}},
	}, nil
}

func (f *fakeDocker) ContainerStop(context.Context, string, container.StopOptions) error {
	return f.call("stop")
}

func (f *fakeDocker) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.removed = append(f.removed, id)
	return f.call("remove")
}

func (f *fakeDocker) ContainerLogs(context.Context, string, container.LogsOptions) (io.ReadCloser, error) {
	return nil, errors.New("no logs")
}

func testSpec() Spec {
	return Spec{
		Name:             "default",
		Image:            "teledock/daemon:v1",
		Token:            "tok",
		ManagerNamespace: "teledock",
		Kubeconfig: &Kubeconfig{
			Data: []byte("apiVersion: v1\n"), Context: "kind", Namespace: "app",
			Server: "https://127.0.0.1:6443", ContainerServer: "https://host.docker.internal:6443",
		},
	}
}

func TestStart(t *testing.T) {
	f := &fakeDocker{}
	l, err := New(f, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := l.Start(context.Background(), testSpec())
	if err != nil {
		t.Fatal(err)
	}
	if c.APIAddr != "127.0.0.1:49153" || !c.Running || c.Context != "kind" || c.Namespace != "app" || c.ManagerNamespace != "teledock" {
		t.Errorf("container = %+v", c)
	}

	h := f.host
	if h.Privileged || !slices.Equal(h.CapAdd, []string{"NET_ADMIN"}) {
		t.Errorf("privileges: privileged=%v capadd=%v", h.Privileged, h.CapAdd)
	}
	if len(h.Devices) != 1 || h.Devices[0].PathOnHost != "/dev/net/tun" {
		t.Errorf("devices = %+v", h.Devices)
	}
	if b := h.PortBindings["7777/tcp"]; len(b) != 1 || b[0].HostIP != "127.0.0.1" || b[0].HostPort != "" {
		t.Errorf("api port binding = %+v; want 127.0.0.1 with a random port", b)
	}
	if !slices.Contains(h.ExtraHosts, "host.docker.internal:host-gateway") {
		t.Errorf("extra hosts = %v", h.ExtraHosts)
	}
	if h.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("restart policy = %q", h.RestartPolicy.Name)
	}
	if !slices.Contains(f.config.Env, "TELEDOCK_TOKEN=tok") || !slices.Contains(f.config.Env, "TELEDOCK_SERVER=https://127.0.0.1:6443") {
		t.Errorf("env = %v", f.config.Env)
	}
	if got := f.copied["/etc/teledock/kubeconfig"]; got != "600:apiVersion: v1\n" {
		t.Errorf("kubeconfig in container = %q", got)
	}
	if !slices.Equal(f.calls, []string{"create", "copy", "start", "inspect"}) {
		t.Errorf("calls = %v", f.calls)
	}
}

func TestStartCleansUp(t *testing.T) {
	tests := []struct {
		failOn      string
		wantErr     error
		wantRemoved bool
	}{
		{failOn: "image", wantErr: ErrImageNotFound},
		{failOn: "create"},
		{failOn: "copy", wantRemoved: true},
		{failOn: "start", wantRemoved: true},
		{failOn: "inspect", wantRemoved: true},
	}
	for _, tt := range tests {
		t.Run(tt.failOn, func(t *testing.T) {
			f := &fakeDocker{failOn: tt.failOn}
			l, err := New(f, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			_, err = l.Start(context.Background(), testSpec())
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if removed := len(f.removed) > 0; removed != tt.wantRemoved {
				t.Errorf("removed = %v, want %v", f.removed, tt.wantRemoved)
			}
		})
	}
}

func TestContainerFromInspect(t *testing.T) {
	labels := map[string]string{LabelName: "dev", LabelAPIPort: "7777"}
	tests := []struct {
		name     string
		info     container.InspectResponse
		wantAddr string
		wantErr  error
	}{
		{
			name:    "not ours",
			info:    container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{Name: "/x"}, Config: &container.Config{}},
			wantErr: ErrNotDaemon,
		},
		{
			name: "exited has no address",
			info: container.InspectResponse{
				ContainerJSONBase: &container.ContainerJSONBase{Name: "/teledock-daemon-dev", State: &container.State{Status: "exited"}},
				Config:            &container.Config{Labels: labels},
			},
		},
		{
			name: "running",
			info: container.InspectResponse{
				ContainerJSONBase: &container.ContainerJSONBase{Name: "/teledock-daemon-dev", State: &container.State{Status: "running", Running: true}},
				Config:            &container.Config{Labels: labels},
				NetworkSettings: &container.NetworkSettings{NetworkSettingsBase: container.NetworkSettingsBase{
					Ports: nat.PortMap{"7777/tcp": {{HostIP: "127.0.0.1", HostPort: "40001"}}},
				}},
			},
			wantAddr: "127.0.0.1:40001",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := containerFromInspect(tt.info)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (c.APIAddr != tt.wantAddr || c.Connection != "dev" || c.Name != "teledock-daemon-dev") {
				t.Errorf("container = %+v", c)
			}
		})
	}
}
