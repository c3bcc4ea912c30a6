package daemon

import (
	"log/slog"
	"net"
	"net/netip"
)

// peerFilter closes, on accept, connections from addresses allow refuses: the API is for the host's
// CLI, not for other containers on the daemon's networks (which would still need the token, but
// should not get to try one).
type peerFilter struct {
	net.Listener
	allow func(netip.Addr) bool
	log   *slog.Logger
}

func (l *peerFilter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tcp, ok := c.RemoteAddr().(*net.TCPAddr); ok && l.allow(tcp.AddrPort().Addr().Unmap()) {
			return c, nil
		}
		l.log.Warn("refused an API connection from outside this host", "peer", c.RemoteAddr().String())
		_ = c.Close()
	}
}
