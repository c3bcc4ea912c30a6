package agentconfig

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
)

// The intercepted containers' volumes: the injector mounts each of them into the agent container
// too, under MountsDir, and the agent serves them over SFTP on the pod's loopback (VolumesPort),
// which only the pod's own containers and the intercepting session's --to-pod path reach.
const (
	// EnvMounts holds the []Mount as JSON.
	EnvMounts = "TELEDOCK_AGENT_MOUNTS"
	// MountsDir is where the agent sees the app containers' volumes: MountsDir/CONTAINER/PATH.
	MountsDir = "/teledock/mounts"
	// VolumesPort is the SFTP server's port on 127.0.0.1 in the pod, just below the health port.
	VolumesPort = 9898
)

// VolumesAddr is the SFTP server's address as the pod sees it: where the agent listens, and the
// only address the daemon's Volumes tunnel may ask for.
var VolumesAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), VolumesPort)

// Mount is one volume mount of an app container.
type Mount struct {
	Container string `json:"container"`
	// Path is where the app container sees the volume.
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// AgentPath is where the agent sees the mount.
func (m Mount) AgentPath() string { return MountsDir + "/" + m.Container + m.Path }

// SFTPPath is where the agent's SFTP server shows the mount: the app container's path under the
// container's name.
func (m Mount) SFTPPath() string { return "/" + m.Container + m.Path }

// ParseMounts reads EnvMounts; an empty value is no mounts.
func ParseMounts(s string) ([]Mount, error) {
	if s == "" {
		return nil, nil
	}
	var ms []Mount
	if err := json.Unmarshal([]byte(s), &ms); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, EnvMounts, err)
	}
	for _, m := range ms {
		if m.Container == "" || !path.IsAbs(m.Path) || path.Clean(m.Path) != m.Path || m.Path == "/" {
			return nil, fmt.Errorf("%w: %s: mount %+v", ErrInvalid, EnvMounts, m)
		}
	}
	return ms, nil
}
