// Package images builds teledock's own images (the daemon, the traffic-manager and the
// traffic-agent) as `docker save` archives from their static binaries, so that the CLI can bring
// them to an engine or a cluster node without a registry.
package images

import (
	"errors"
	"fmt"
)

// Spec is one image as its Dockerfile describes it: FROM scratch, one binary at /, that binary as
// the entrypoint, and a user where the Dockerfile sets one.
type Spec struct {
	Repository string // e.g. teledock/daemon
	Binary     string // the file at /, and the name of the binary in build/bin and the payload
	User       string // USER, "" for root
}

// The images teledock ships; keep them in step with daemoncontainer/Dockerfile, cluster/Dockerfile
// and agent/Dockerfile (TestSpecsMatchDockerfiles checks).
var (
	Daemon         = Spec{Repository: "teledock/daemon", Binary: "teledock-daemon"}
	TrafficManager = Spec{Repository: "teledock/traffic-manager", Binary: "traffic-manager", User: "65532:65532"}
	TrafficAgent   = Spec{Repository: "teledock/traffic-agent", Binary: "traffic-agent", User: "7777:7777"}
)

// Specs lists every image this package builds.
func Specs() []Spec { return []Spec{Daemon, TrafficManager, TrafficAgent} }

// Ref is the image's reference for a version: REPOSITORY:VERSION.
func (s Spec) Ref(version string) string { return s.Repository + ":" + version }

// ErrNotCarried means this CLI has no binary for the image: it was built without the
// teledockimages tag (`make build` sets it), or for other node architectures.
var ErrNotCarried = errors.New("this teledock carries no images")

// Carried returns the archive of a shipped image for linux/arch, from the binary this CLI carries.
// The error wraps ErrNotCarried when there is none.
func Carried(s Spec, version, arch string) (*Archive, error) {
	src, ok := payloadSource(s.Binary, arch)
	if !ok {
		if len(payloadArchs()) == 0 {
			return nil, fmt.Errorf("%w (built without them)", ErrNotCarried)
		}
		return nil, fmt.Errorf("%w for linux/%s (only for %v)", ErrNotCarried, arch, payloadArchs())
	}
	return New(s, version, arch, src)
}

// CarriedArchs lists the architectures this CLI carries images for; none without the
// teledockimages build tag.
func CarriedArchs() []string { return payloadArchs() }
