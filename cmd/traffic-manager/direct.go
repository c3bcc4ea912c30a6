package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"

	"teledock.dev/teledock/cluster/direct"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/manager"
	"teledock.dev/teledock/tunnel"
)

// directCertValidity outlives any manager pod; the certificate is made anew at every start.
const directCertValidity = 365 * 24 * time.Hour

// newDirectTLS makes the direct port's CA and certificate in memory. Nothing stores them: clients
// learn the CA over the port-forward (DirectInfo) each time they arrive, so a restarted manager
// simply hands out its new one, and no Secret holds a key that could impersonate the manager.
func newDirectTLS(service, namespace string) (*tls.Config, *manager.DirectConfig, error) {
	certs, err := inject.NewServingCerts(service, namespace, time.Now(), directCertValidity)
	if err != nil {
		return nil, nil, fmt.Errorf("direct port: %w", err)
	}
	pair, err := tls.X509KeyPair(certs.Cert, certs.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("direct port: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
	}
	names := inject.ServiceDNSNames(service, namespace)
	return cfg, &manager.DirectConfig{Service: service, CACert: certs.CACert, ServerName: names[2]}, nil
}

// directServer serves the manager's tunnels on the direct port: the Mux terminates TLS and takes
// the raw tunnels, the gRPC server the rest (its streams with the tunnel's window options); the
// guard admits only session tokens on both (see package direct).
func directServer(m *manager.Manager, l net.Listener, tlsCfg *tls.Config, log *slog.Logger) (*grpc.Server, *direct.Mux, error) {
	g, err := direct.New(m.DirectSession)
	if err != nil {
		return nil, nil, err
	}
	mux := g.NewMux(l, tlsCfg, m.ServeRaw, log.With("component", "direct"))
	return grpc.NewServer(append(tunnel.ServerOptions(), g.ServerOptions()...)...), mux, nil
}
