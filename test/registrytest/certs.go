package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// authority is a certificate authority generated for one registry: it
// signs the registry's server certificate, client certificates or the
// token server's signing certificate.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// keyPair is a certificate and its private key.
type keyPair struct {
	der []byte // the certificate, DER
	key *ecdsa.PrivateKey
}

// newAuthority generates a self-signed CA named cn.
func newAuthority(cn string) (*authority, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"kiln tests"}},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	pair, err := sign(tmpl, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("generating CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(pair.der)
	if err != nil {
		return nil, fmt.Errorf("parsing the generated CA %q: %w", cn, err)
	}
	return &authority{cert: cert, key: pair.key}, nil
}

// issue signs a new key's certificate made from tmpl.
func (a *authority) issue(tmpl *x509.Certificate) (*keyPair, error) {
	pair, err := sign(tmpl, a.cert, a.key)
	if err != nil {
		return nil, fmt.Errorf("issuing a certificate for %q from CA %q: %w", tmpl.Subject.CommonName, a.cert.Subject.CommonName, err)
	}
	return pair, nil
}

// certPEM is the CA's own certificate, PEM.
func (a *authority) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
}

// sign makes a P-256 key and a certificate for it from tmpl, signed by
// parent (self-signed when parent is nil). It fills in the serial number
// and a validity from an hour ago to two days ahead.
func sign(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("drawing a serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(48 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, fmt.Errorf("creating the certificate: %w", err)
	}
	return &keyPair{der: der, key: key}, nil
}

// serverTemplate is a TLS server certificate for the given names and IP
// addresses, always including 127.0.0.1, ::1 and localhost.
func serverTemplate(cn string, hosts []string) *x509.Certificate {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"kiln tests"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"127.0.0.1", "::1", "localhost"}, hosts...) {
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

// write stores the certificate at certFile (mode 0644) and its key, PKCS #8,
// at keyFile (mode 0600).
func (p *keyPair) write(certFile, keyFile string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		return fmt.Errorf("encoding the key for %s: %w", keyFile, err)
	}
	if err := writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.der}), 0o644); err != nil {
		return err
	}
	return writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// writeFile writes data to path with mode perm, naming path on failure.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// IssueCert writes a TLS server certificate for hosts (names or IP
// addresses; 127.0.0.1, ::1 and localhost are always included) signed by
// the CA that signed the registry's certificate, so a client trusting
// CAFile trusts it too: e.g. for a proxy in front of the registry. The
// files are new ones in r.Dir. The registry must have been started with
// Options.TLS.
func (r *Registry) IssueCert(t testing.TB, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	if r.ca == nil {
		t.Fatalf("registrytest: IssueCert on the registry at %s: it was started without Options.TLS, so it has no CA", r.Host)
	}
	pair, err := r.ca.issue(serverTemplate("kiln test server", hosts))
	if err != nil {
		t.Fatalf("registrytest: IssueCert(%q): %v", hosts, err)
	}
	f, err := os.CreateTemp(r.Dir, "issued-*-cert.pem")
	if err != nil {
		t.Fatalf("registrytest: IssueCert(%q): creating the certificate file: %v", hosts, err)
	}
	certFile = f.Name()
	f.Close()
	keyFile = strings.TrimSuffix(certFile, "-cert.pem") + "-key.pem"
	if err := pair.write(certFile, keyFile); err != nil {
		t.Fatalf("registrytest: IssueCert(%q): %v", hosts, err)
	}
	return certFile, keyFile
}

// tlsCert is the pair as crypto/tls wants it.
func (p *keyPair) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.der}, PrivateKey: p.key}
}
