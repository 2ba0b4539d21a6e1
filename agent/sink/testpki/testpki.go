// Package testpki makes a throw-away PKI for tests of TLS transports: a CA, and leaf
// certificates for 127.0.0.1 and localhost signed by it, both as crypto/tls values and as PEM
// files (NAME.pem, NAME-key.pem) for configs that name files. Tests only: the keys are
// ephemeral, the certificates valid for a day.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// PKI is a test CA whose files are in Dir.
type PKI struct {
	t     testing.TB
	dir   string
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	CA    string         // the CA certificate's PEM file
	Pool  *x509.CertPool // holds the CA
	names atomic.Int64   // serial numbers
}

// New makes a CA in dir (ca.pem, ca-key.pem).
func New(t testing.TB, dir string) *PKI {
	t.Helper()
	p := &PKI{t: t, dir: dir, Pool: x509.NewCertPool()}
	tmpl := p.template("test CA")
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	var der []byte
	der, p.key = p.sign(tmpl, nil, nil)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p.cert = cert
	p.Pool.AddCert(cert)
	p.CA, _ = p.write("ca", der, p.key)
	return p
}

// Leaf makes a certificate for 127.0.0.1 and localhost, good for a server and a client,
// signed by the CA; it returns it and the paths of its PEM files.
func (p *PKI) Leaf(name string) (cert tls.Certificate, certFile, keyFile string) {
	p.t.Helper()
	tmpl := p.template(name)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	der, key := p.sign(tmpl, p.cert, p.key)
	certFile, keyFile = p.write(name, der, key)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certFile, keyFile
}

func (p *PKI) template(name string) *x509.Certificate {
	return &x509.Certificate{SerialNumber: big.NewInt(p.names.Add(1)), Subject: pkix.Name{CommonName: "ssanet test " + name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
}

// sign makes a key and a certificate from tmpl, signed by parent (self-signed if nil).
func (p *PKI) sign(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		p.t.Fatal(err)
	}
	return der, key
}

// write writes NAME.pem and NAME-key.pem (PKCS #8), mode 0600.
func (p *PKI) write(name string, der []byte, key *ecdsa.PrivateKey) (certFile, keyFile string) {
	p.t.Helper()
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	for path, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	return certFile, keyFile
}
