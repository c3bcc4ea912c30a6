package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/image"
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
	dec := json.NewDecoder(rc)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("push %s: reading the engine's progress: %w", remote, err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return fmt.Errorf("push %s: %s", remote, m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return fmt.Errorf("push %s: %s", remote, m.Error)
		}
	}
}
