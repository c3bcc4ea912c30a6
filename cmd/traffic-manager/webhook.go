package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"teledock.dev/teledock/cluster/inject"
)

// certFiles serves the certificate in a directory holding tls.crt and tls.key (a mounted
// kubernetes.io/tls Secret), and loads it again when tls.crt changes: the kubelet updates mounted
// Secrets in place, so a rotated certificate takes effect without a restart.
type certFiles struct {
	certPath, keyPath string

	mu   sync.Mutex // mu guards the following
	cert *tls.Certificate
	mod  time.Time // tls.crt's modification time when cert was loaded
}

func newCertFiles(dir string) (*certFiles, error) {
	c := &certFiles{certPath: filepath.Join(dir, "tls.crt"), keyPath: filepath.Join(dir, "tls.key")}
	if _, err := c.GetCertificate(nil); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *certFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	fi, err := os.Stat(c.certPath)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // mid-update; the old one is still good
		}
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	if c.cert != nil && fi.ModTime().Equal(c.mod) {
		return c.cert, nil
	}
	pair, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // the key may not be written yet
		}
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	c.cert, c.mod = &pair, fi.ModTime()
	return c.cert, nil
}

// webhookServer serves the agent injector's admission handler over HTTPS, as the API server
// requires of webhooks.
func webhookServer(h http.Handler, certs *certFiles, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(inject.DefaultWebhookPath, h)
	return &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			GetCertificate: certs.GetCertificate,
			MinVersion:     tls.VersionTLS12,
		},
		// The API server gives a webhook 5s (timeoutSeconds); a client slower than that is not it.
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
