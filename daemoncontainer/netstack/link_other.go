//go:build !linux

package netstack

import (
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// fdLink is Linux-only: the daemon container is the only user of a TUN fd.
func fdLink(int, uint32, func(error)) (stack.LinkEndpoint, error) {
	return nil, errors.New("fd links need Linux")
}

// maxMTU is the IPv4 limit; fdLink, which imposes a lower one on Linux, is unavailable here.
const maxMTU = 65535
