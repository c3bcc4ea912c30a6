package main

import (
	"context"
	"errors"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

// fakeEngine answers inspections from a map of containers.
type fakeEngine struct {
	containers map[string]container.InspectResponse
	stopped    []string
	removed    []string
}

func (f *fakeEngine) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.removed = append(f.removed, id)
	return nil
}

func (f *fakeEngine) ContainerInspect(_ context.Context, name string) (container.InspectResponse, error) {
	c, ok := f.containers[name]
	if !ok {
		return container.InspectResponse{}, cerrdefs.ErrNotFound
	}
	return c, nil
}

func (f *fakeEngine) ContainerStop(_ context.Context, name string, _ container.StopOptions) error {
	f.stopped = append(f.stopped, name)
	return nil
}

func (f *fakeEngine) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return nil, nil
}

func (f *fakeEngine) NetworkList(context.Context, network.ListOptions) ([]network.Summary, error) {
	return nil, nil
}

func (f *fakeEngine) NetworkConnect(context.Context, string, string, *network.EndpointSettings) error {
	return nil
}

func inspected(id, name string, running bool, mode string, nets map[string]*network.EndpointSettings) container.InspectResponse {
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID: id, Name: "/" + name,
			State:      &container.State{Running: running},
			HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(mode)},
		},
		NetworkSettings: &container.NetworkSettings{Networks: nets},
	}
}

func TestResolveAddress(t *testing.T) {
	bridge := func(ip string) map[string]*network.EndpointSettings {
		return map[string]*network.EndpointSettings{"bridge": {NetworkID: "net-bridge", IPAddress: ip}}
	}
	engine := &fakeEngine{containers: map[string]container.InspectResponse{
		"teledock-daemon-default": inspected("d1", "teledock-daemon-default", true, "default", bridge("172.17.0.2")),
		"web":                     inspected("w1", "web", true, "default", bridge("172.17.0.5")),
		"two-nets": inspected("t1", "two-nets", true, "mynet", map[string]*network.EndpointSettings{
			"mynet":  {NetworkID: "net-my", IPAddress: "10.10.0.3"},
			"bridge": {NetworkID: "net-bridge", IPAddress: "172.17.0.9"},
		}),
		"elsewhere": inspected("e1", "elsewhere", true, "mynet", map[string]*network.EndpointSettings{"mynet": {NetworkID: "net-my", IPAddress: "10.10.0.4"}}),
		"stopped":   inspected("s1", "stopped", false, "default", nil),
		"joined":    inspected("j1", "joined", true, "container:d1", nil),
	}}
	tests := []struct {
		value   string
		want    string
		wantErr error
	}{
		{value: "172.16.0.19", want: "172.16.0.19"},
		{value: "fd00::5", want: "fd00::5"},
		{value: "web", want: "172.17.0.5"},
		{value: "two-nets", want: "172.17.0.9"},
		{value: "joined", want: "127.0.0.1"},
		{value: "elsewhere", wantErr: errAddressNetwork},
		{value: "stopped", wantErr: errBadAddress},
		{value: "nope", wantErr: errBadAddress},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := resolveAddress(context.Background(), engine, "teledock-daemon-default", tt.value)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Errorf("resolveAddress(%q) = %v, %v; want %s", tt.value, got, err, tt.want)
			}
		})
	}
}
