package agent

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/agent/volumes"
)

// volumeServer serves the intercepted containers' mounts over SFTP on the pod's loopback: other
// pods cannot reach it, and the intercepting developer reaches it through the session's --to-pod
// path, which the manager admits only for the intercept's owner.
type volumeServer struct {
	log  *slog.Logger
	fs   *volumes.FS
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
}

// serveVolumes starts the server on addr, or returns nil when there is nothing to serve or it
// cannot start: the mounts are a convenience, the intercept works without them.
func serveVolumes(log *slog.Logger, mounts []agentconfig.Mount, addr string) *volumeServer {
	var vm []volumes.Mount
	for _, m := range mounts {
		st, err := os.Stat(m.AgentPath())
		switch {
		case err != nil:
			log.Warn("volume mount not found in the agent", "path", m.Path, "err", err)
			continue
		case !st.IsDir():
			// A subPath mount of one file; os.Root serves folders.
			log.Info("single-file mounts are not served", "container", m.Container, "path", m.Path)
			continue
		}
		vm = append(vm, volumes.Mount{PodPath: m.SFTPPath(), Dir: m.AgentPath(), ReadOnly: m.ReadOnly})
	}
	if len(vm) == 0 {
		return nil
	}
	fsys, err := volumes.New(vm)
	if err != nil {
		log.Warn("volumes not served", "err", err)
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fsys.Close()
		log.Warn("volumes not served", "err", err)
		return nil
	}
	s := &volumeServer{log: log, fs: fsys, ln: ln, conn: map[net.Conn]struct{}{}}
	s.wg.Go(s.accept)
	log.Info("serving volumes", "addr", ln.Addr(), "mounts", len(vm))
	return s
}

func (s *volumeServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("volumes: accept", "err", err)
			}
			return
		}
		s.mu.Lock()
		s.conn[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			if err := s.fs.Serve(c); err != nil {
				s.log.Debug("volumes: session ended", "err", err)
			}
			s.mu.Lock()
			delete(s.conn, c)
			s.mu.Unlock()
			c.Close()
		})
	}
}

// close stops accepting, ends the sessions and waits for them.
func (s *volumeServer) close() {
	if s == nil {
		return
	}
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.fs.Close()
}

func volumesAddr() string { return agentconfig.VolumesAddr.String() }
