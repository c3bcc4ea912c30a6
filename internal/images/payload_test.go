//go:build teledockimages

package images

import (
	"errors"
	"io"
	"slices"
	"testing"
)

// Run by `go test -tags teledockimages ./internal/images` after `make build` filled the payload.
func TestCarried(t *testing.T) {
	archs := CarriedArchs()
	if len(archs) == 0 {
		t.Fatal("built with teledockimages but no payload")
	}
	for _, s := range Specs() {
		a, err := Carried(s, "v1", archs[0])
		if err != nil {
			t.Fatalf("Carried(%s): %v", s.Repository, err)
		}
		n, err := a.WriteTo(io.Discard)
		if err != nil || n != a.Size() {
			t.Errorf("%s: wrote %d bytes (Size %d): %v", s.Repository, n, a.Size(), err)
		}
	}
	if !slices.Contains(archs, "s390x") {
		if _, err := Carried(Daemon, "v1", "s390x"); !errors.Is(err, ErrNotCarried) {
			t.Errorf("Carried for s390x = %v, want ErrNotCarried", err)
		}
	}
}
