package registry

import (
	"context"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/pkg/jsonmessage"
)

// PushAPI is what Push needs of the Docker engine.
type PushAPI interface {
	ImageTag(ctx context.Context, source, target string) error
	ImagePush(ctx context.Context, ref string, options image.PushOptions) (io.ReadCloser, error)
}

// Push tags the engine's image local as remote and pushes it with auth (an X-Registry-Auth value,
// see Credentials). The engine reports a failed push inside its progress stream, so the stream is
// read to the end.
func Push(ctx context.Context, api PushAPI, local, remote, auth string) error {
	if err := api.ImageTag(ctx, local, remote); err != nil {
		return fmt.Errorf("tag %s as %s: %w", local, remote, err)
	}
	rc, err := api.ImagePush(ctx, remote, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		return fmt.Errorf("push %s: %w", remote, err)
	}
	defer rc.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("push %s: %w", remote, err)
	}
	return nil
}
