package tunnel

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func testTLSConfigs(t testing.TB) (client, server *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "manager"}, DNSNames: []string{"manager"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: pool, ServerName: "manager", MinVersion: tls.VersionTLS13}
	return client, server
}

// A 64 KiB Write is four TLS records; they reach the socket in one write, and the far end reads
// the same bytes.
func TestTLSWritesRecordsAtOnce(t *testing.T) {
	clientCfg, serverCfg := testTLSConfigs(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	payload := bytes.Repeat([]byte("teledock"), 8<<10) // 64 KiB
	got := make(chan []byte, 1)
	go func() {
		raw, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer raw.Close()
		conn, _, err := TLS(serverCfg).ServerHandshake(raw)
		if err != nil {
			got <- nil
			return
		}
		b := make([]byte, 2*len(payload))
		_, err = io.ReadFull(conn, b)
		if err != nil {
			got <- nil
			return
		}
		got <- b
	}()
	dialed, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw := &countingConn{Conn: dialed}
	defer raw.Close()
	conn, _, err := TLS(clientCfg).ClientHandshake(context.Background(), "manager", raw)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		before := raw.writes.Load()
		if n, err := conn.Write(payload); err != nil || n != len(payload) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if w := raw.writes.Load() - before; w != 1 {
			t.Errorf("a 64 KiB Write took %d socket writes, want 1", w)
		}
	}
	if b := <-got; !bytes.Equal(b, append(bytes.Clone(payload), payload...)) {
		t.Error("the server read other bytes than were written")
	}
}
