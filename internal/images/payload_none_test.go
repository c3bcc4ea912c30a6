//go:build !teledockimages

package images

import (
	"errors"
	"testing"
)

func TestNotCarried(t *testing.T) {
	if archs := CarriedArchs(); len(archs) != 0 {
		t.Errorf("CarriedArchs = %v without the teledockimages tag", archs)
	}
	if _, err := Carried(Daemon, "v1", "amd64"); !errors.Is(err, ErrNotCarried) {
		t.Errorf("Carried = %v, want ErrNotCarried", err)
	}
}
