package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"teledock.dev/teledock/agent/agentconfig"
)

// readiness is what the kubelet's readiness probe sees: ready while the agent listens on its
// ports. The manager's reachability does not count: without it the agent still forwards to the
// app, and an unready pod would lose its endpoints for nothing.
type readiness struct{ ok atomic.Bool }

func (r *readiness) set(ok bool) { r.ok.Store(ok) }

func (r *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if !r.ok.Load() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// healthServer is the agent's small HTTP endpoint.
type healthServer struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{}
}

// serveHealth serves agentconfig.ReadyPath on addr until stop.
func (a *Agent) serveHealth(addr string) (*healthServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+agentconfig.ReadyPath, &a.ready)
	h := &healthServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		addr: l.Addr(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("health endpoint failed", "err", err)
		}
	}()
	return h, nil
}

func (h *healthServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		h.srv.Close()
	}
	<-h.done
}
