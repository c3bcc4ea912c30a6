//go:build !teledockimages

package images

// Without the teledockimages tag (a plain `go build ./cmd/teledock`), the CLI carries no images.

func payloadSource(string, string) (Source, bool) { return Source{}, false }

func payloadArchs() []string { return nil }
