package inject

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"testing"
	"time"
)

func TestNewServingCerts(t *testing.T) {
	now := time.Now()
	certs, err := NewServingCerts("traffic-manager", "teledock", now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca := parseCert(t, certs.CACert)
	leaf := parseCert(t, certs.Cert)
	t.Run("CA", func(t *testing.T) {
		if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("CA %+v", ca)
		}
		if _, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Errorf("CA key %T", ca.PublicKey)
		}
	})
	t.Run("leaf", func(t *testing.T) {
		if leaf.IsCA || leaf.SerialNumber.Cmp(ca.SerialNumber) == 0 {
			t.Errorf("leaf %+v", leaf)
		}
		if !leaf.NotAfter.Equal(now.Add(24*time.Hour).Truncate(time.Second)) || leaf.NotBefore.After(now.Add(-time.Minute)) {
			t.Errorf("validity %v..%v", leaf.NotBefore, leaf.NotAfter)
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, tc := range []struct {
		name   string
		dns    string
		at     time.Time
		wantOK bool
	}{
		{"service.namespace.svc", "traffic-manager.teledock.svc", now, true},
		{"fully qualified", "traffic-manager.teledock.svc.cluster.local", now, true},
		{"short", "traffic-manager", now, true},
		{"with clock skew", "traffic-manager.teledock.svc", now.Add(-30 * time.Minute), true},
		{"other service", "other.teledock.svc", now, false},
		{"other namespace", "traffic-manager.default.svc", now, false},
		{"expired", "traffic-manager.teledock.svc", now.Add(25 * time.Hour), false},
	} {
		t.Run("verify "+tc.name, func(t *testing.T) {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.dns, Roots: roots, CurrentTime: tc.at,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if (err == nil) != tc.wantOK {
				t.Errorf("Verify: %v, want ok=%v", err, tc.wantOK)
			}
		})
	}

	t.Run("TLS handshake", func(t *testing.T) {
		pair, err := tls.X509KeyPair(certs.Cert, certs.Key)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.WriteString(c, "ok")
		}()
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(certs.CACert) {
			t.Fatal("bad CA PEM")
		}
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "traffic-manager.teledock.svc"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		if string(b) != "ok" {
			t.Errorf("read %q", b)
		}
	})
}

func TestNewServingCertsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, service, namespace string
		validity                 time.Duration
		wantErr                  string
	}{
		{"no service", "", "ns", time.Hour, "service and namespace are required"},
		{"no namespace", "svc", "", time.Hour, "service and namespace are required"},
		{"no validity", "svc", "ns", 0, "validity 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServingCerts(tc.service, tc.namespace, time.Now(), tc.validity)
			assertErrContains(t, err, tc.wantErr)
		})
	}
}

func parseCert(tb testing.TB, pemData []byte) *x509.Certificate {
	tb.Helper()
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "CERTIFICATE" {
		tb.Fatalf("not a certificate PEM: %q", pemData)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
