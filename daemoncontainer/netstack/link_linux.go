package netstack

import (
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxMTU is the largest packet the fd link reads whole: fdbased reads into a fixed iovec set
// (fdbased.BufConfig, 65408 bytes at this version) and a longer packet would arrive truncated.
var maxMTU = func() int {
	n := 0
	for _, size := range fdbased.BufConfig {
		n += size
	}
	return min(n, 65535)
}()

// fdLink wraps an fd that carries bare IP packets (TUN with IFF_NO_PI, or a SOCK_SEQPACKET
// socket in tests). stopped is called if reading the fd fails, after which no packet arrives.
func fdLink(fd int, mtu uint32, stopped func(error)) (stack.LinkEndpoint, error) {
	return fdbased.New(&fdbased.Options{
		FDs: []int{fd},
		MTU: mtu,
		ClosedFunc: func(err tcpip.Error) {
			// A nil error is the orderly stop when the NIC is removed.
			if err != nil {
				stopped(errors.New(err.String()))
			}
		},
		// The kernel completes checksums before it hands a packet to a TUN without offloads,
		// so verifying them again only costs CPU. The reverse is not true: the kernel checks
		// what we write, so TX checksums stay on.
		RXChecksumOffload: true,
		// The default readv dispatcher, one packet per syscall, is the only one a TUN supports.
		// Do not ask for RecvMMsg for socket fds either: at this gVisor version fdbased builds a
		// readv dispatcher first and leaks its processor goroutines when it replaces it.
		PacketDispatchMode: fdbased.Readv,
	})
}
