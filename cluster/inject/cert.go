package inject

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// clockSkew back-dates certificates so that an API server whose clock is a little behind the
// manager's accepts them at once.
const clockSkew = time.Hour

// ServingCerts is a self-signed CA and the webhook's serving certificate, in PEM.
type ServingCerts struct {
	CACert []byte // goes into the webhook configuration's caBundle
	Cert   []byte
	Key    []byte // PKCS #8
}

// ServiceDNSNames are the names under which a service is reached in the cluster. The API server
// calls a webhook as "<service>.<namespace>.svc".
func ServiceDNSNames(service, namespace string) []string {
	return []string{
		service,
		service + "." + namespace,
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
	}
}

// NewServingCerts makes a CA and a serving certificate for the service's DNS names, both ECDSA
// P-256 and valid from now (less clockSkew) for validity. The CA's key is not kept: nothing
// else is ever signed with it, and a new pair replaces the old one before it expires.
func NewServingCerts(service, namespace string, now time.Time, validity time.Duration) (ServingCerts, error) {
	if service == "" || namespace == "" {
		return ServingCerts{}, errors.New("serving certs: service and namespace are required")
	}
	if validity <= 0 {
		return ServingCerts{}, fmt.Errorf("serving certs: validity %v", validity)
	}
	notBefore, notAfter := now.Add(-clockSkew), now.Add(validity)

	caSerial, err := serial()
	if err != nil {
		return ServingCerts{}, err
	}
	certSerial, err := serial()
	if err != nil {
		return ServingCerts{}, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return ServingCerts{}, fmt.Errorf("serving certs: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "teledock webhook CA " + namespace},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return ServingCerts{}, fmt.Errorf("serving certs: CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return ServingCerts{}, fmt.Errorf("serving certs: CA: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return ServingCerts{}, fmt.Errorf("serving certs: key: %w", err)
	}
	names := ServiceDNSNames(service, namespace)
	tmpl := &x509.Certificate{
		SerialNumber: certSerial,
		Subject:      pkix.Name{CommonName: names[2]},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return ServingCerts{}, fmt.Errorf("serving certs: certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return ServingCerts{}, fmt.Errorf("serving certs: key: %w", err)
	}
	return ServingCerts{
		CACert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Cert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// serial is a random 128-bit serial number: RFC 5280 asks serials to be unique per CA, and a
// random one needs no state.
func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}
