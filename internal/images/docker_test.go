package images

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// TestDockerLoad loads a generated archive into the local engine, twice, under a throwaway tag; it
// skips when Docker is unreachable.
func TestDockerLoad(t *testing.T) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Skipf("docker client: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = c.Ping(pctx)
	pcancel()
	if err != nil {
		t.Skipf("docker unreachable: %v", err)
	}
	sv, err := c.ServerVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}

	spec := Spec{Repository: fmt.Sprintf("teledock-test/images-%d", time.Now().UnixNano()), Binary: "probe", User: "7777:7777"}
	a, err := New(spec, "v1", sv.Arch, bytesSource([]byte("not run, only loaded")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := c.ImageRemove(context.Background(), a.Ref(), image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Logf("remove %s: %v", a.Ref(), err)
		}
	})
	for i := range 2 { // the second load finds the same image: a no-op
		resp, err := c.ImageLoad(ctx, a.Reader(), client.ImageLoadWithQuiet(true))
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(out), `"error`) {
			t.Fatalf("load %d: %s", i, out)
		}
		got, err := c.ImageInspect(ctx, a.Ref())
		if err != nil {
			t.Fatalf("inspect after load %d: %v", i, err)
		}
		if got.ID != a.ID() {
			t.Errorf("load %d: image ID %s, want %s", i, got.ID, a.ID())
		}
		if got.Config == nil || got.Config.User != spec.User || strings.Join(got.Config.Entrypoint, " ") != "/probe" ||
			got.Os != "linux" || got.Architecture != sv.Arch {
			t.Errorf("load %d: config %+v, platform %s/%s", i, got.Config, got.Os, got.Architecture)
		}
	}
}
