// Package steptest runs a real step-ca (smallstep/certificates) for tests:
// its own PKI (root and intermediate, as `step ca init` makes them), a JWK
// and an X5C provisioner whose X.509 template issues CA certificates, and
// the embedded database, all in a temporary directory, on a free loopback
// port.
package steptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
)

// EnvBin names the variable holding the step-ca binary; `make test`
// exports it (test/testbed/stepca.mk).
const EnvBin = "MESHCA_STEPCA_BIN"

// Version is the step-ca version the test bed builds.
const Version = "v0.30.2"

// Provisioner is the name of the JWK provisioner Start configures.
const Provisioner = "meshca"

// X5CProvisioner is the name of the X5C provisioner Start configures: it
// accepts tokens signed by a key whose certificate chains to a root of its
// own (Server.X5CCertFile, Server.X5CKeyFile).
const X5CProvisioner = "meshca-x5c"

// CATemplate is the provisioner's X.509 template: a CA certificate with
// the CSR's subject and room for one CA below it (the cluster
// intermediates), as an operator would configure it for meshca.
const CATemplate = `{
	"subject": {{ toJson .Insecure.CR.Subject }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 1}
}`

// LeafTemplate is step-ca's default leaf template: what a provisioner that
// was not set up for meshca issues.
const LeafTemplate = `{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["serverAuth", "clientAuth"]
}`

// Bin returns the step-ca binary: $MESHCA_STEPCA_BIN, else where `make
// testbed-stepca` caches it. It skips the test when the binary is missing,
// or fails it under CI=true, where `make test` must have built it.
func Bin(tb testing.TB) string {
	tb.Helper()
	return testkit.TestbedBin(tb, EnvBin, filepath.Join("step-ca-"+Version, "step-ca"), "step-ca binary", "testbed-stepca")
}

// Options shape the step-ca Start runs. The zero value is a CA-issuing
// provisioner allowing up to 2400 h.
type Options struct {
	// Template is the provisioner's X.509 template; empty means CATemplate.
	Template string
	// MaxTTL is the provisioner's maxTLSCertDuration; zero means 2400 h.
	MaxTTL time.Duration
	// IntermediatePathLen is the path length of step-ca's own intermediate;
	// zero means 2 (room for meshca's CA and a cluster intermediate), a
	// negative value means 0.
	IntermediatePathLen int
}

// Server is a running step-ca. Its fields do not change after Start.
type Server struct {
	// URL is https://127.0.0.1:PORT.
	URL string
	// Fingerprint is the hex SHA-256 of Root.
	Fingerprint string
	// Root is step-ca's root certificate, RootFile its PEM file.
	Root     *x509.Certificate
	RootFile string
	// KeyFile is the JWK provisioner's private key (unencrypted PEM).
	KeyFile string
	// X5CCertFile and X5CKeyFile are the certificate and key that sign
	// tokens for the X5C provisioner.
	X5CCertFile, X5CKeyFile string

	bin, dir string
	proc     *harness.Proc
	client   *http.Client
}

// Start writes a PKI, the provisioner and ca.json into a temporary
// directory and runs step-ca on it until the test ends.
func Start(t *testing.T, opts Options) *Server {
	t.Helper()
	s := &Server{bin: Bin(t), dir: t.TempDir()}
	addr := testkit.FreeAddr(t)
	s.URL = "https://" + addr
	if err := s.write(addr, opts); err != nil {
		t.Fatalf("step-ca config: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.Root)
	s.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, DisableKeepAlives: true,
	}}
	s.Restart(t)
	return s
}

// Stop stops step-ca (SIGTERM); Restart starts it again on the same port,
// configuration and database.
func (s *Server) Stop(t *testing.T) {
	t.Helper()
	if s.proc != nil {
		_ = s.proc.Stop(t)
		s.proc = nil
	}
}

// Restart starts step-ca (stopping it first if it runs) and waits until it
// answers /health.
func (s *Server) Restart(t *testing.T) {
	t.Helper()
	s.Stop(t)
	// step-ca logs each one-time token it redeems (a JWT, "eyJ..."): they
	// are single-use and expire in minutes. Its output is still checked for
	// private keys.
	s.proc = harness.StartLogging(t, []string{"eyJ"}, s.bin, "step-ca", filepath.Join(s.dir, "ca.json"))
	s.proc.WaitFor(t, "step-ca /health", harness.StartTimeout, func() bool {
		resp, err := s.client.Get(s.URL + "/health")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// write creates the root, the intermediate, the provisioner key and
// ca.json, and fills in s.
func (s *Server) write(addr string, opts Options) error {
	rootKey, intKey, provKey := newKey(), newKey(), newKey()
	now := time.Now()
	root := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test upstream root", Organization: []string{"upstream"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: -1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	if s.Root, err = x509.ParseCertificate(rootDER); err != nil {
		return err
	}
	pathLen := opts.IntermediatePathLen
	if pathLen == 0 {
		pathLen = 2
	}
	inter := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test upstream intermediate", Organization: []string{"upstream"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
		MaxPathLen: max(pathLen, 0), MaxPathLenZero: pathLen < 0,
	}
	intDER, err := x509.CreateCertificate(rand.Reader, inter, s.Root, &intKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(rootDER)
	s.Fingerprint = hex.EncodeToString(sum[:])
	s.RootFile = filepath.Join(s.dir, "root_ca.crt")
	s.KeyFile = filepath.Join(s.dir, "provisioner.key")
	x5cRoot, x5cCert, x5cKey, err := x5cCredential(now)
	if err != nil {
		return err
	}
	s.X5CCertFile, s.X5CKeyFile = filepath.Join(s.dir, "x5c.crt"), filepath.Join(s.dir, "x5c.key")
	conf, err := caJSON(s.dir, addr, &provKey.PublicKey, x5cRoot, opts)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"x5c.crt":             x5cCert,
		"x5c.key":             x5cKey,
		"root_ca.crt":         pemBlock("CERTIFICATE", rootDER),
		"intermediate_ca.crt": pemBlock("CERTIFICATE", intDER),
		"intermediate_ca_key": pemKey(intKey),
		"provisioner.key":     pemKey(provKey),
		"ca.json":             conf,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// x5cCredential makes the X5C provisioner's root (PEM) and a client
// certificate (PEM) and key (PEM) under it, valid longer than any lifetime
// asked of step-ca: stepcas shortens a request to the certificate's life.
func x5cCredential(now time.Time) (rootPEM, certPEM, keyPEM []byte, err error) {
	rootKey, key := newKey(), newKey()
	root := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "test x5c provisioner root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "meshca root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, root, &key.PublicKey, rootKey)
	if err != nil {
		return nil, nil, nil, err
	}
	return pemBlock("CERTIFICATE", rootDER), pemBlock("CERTIFICATE", leafDER), pemKey(key), nil
}

// caJSON is the ca.json of a standalone step-ca with a JWK and an X5C
// provisioner, both with the same template and limits.
func caJSON(dir, addr string, provPub *ecdsa.PublicKey, x5cRoots []byte, opts Options) ([]byte, error) {
	jwk := jose.JSONWebKey{Key: provPub, Algorithm: string(jose.ES256), Use: "sig"}
	// The key ID is the key's RFC 7638 thumbprint, as `step crypto jwk
	// create` sets it and stepcas computes it for the tokens it signs.
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	maxTTL := opts.MaxTTL
	if maxTTL == 0 {
		maxTTL = 2400 * time.Hour
	}
	tmpl := opts.Template
	if tmpl == "" {
		tmpl = CATemplate
	}
	claims := map[string]string{
		"minTLSCertDuration": "5m", "maxTLSCertDuration": maxTTL.String(),
		"defaultTLSCertDuration": min(maxTTL, 24*time.Hour).String(),
	}
	options := map[string]any{"x509": map[string]string{"template": tmpl}}
	conf := map[string]any{
		"root":     filepath.Join(dir, "root_ca.crt"),
		"crt":      filepath.Join(dir, "intermediate_ca.crt"),
		"key":      filepath.Join(dir, "intermediate_ca_key"),
		"address":  addr,
		"dnsNames": []string{"127.0.0.1"},
		"logger":   map[string]string{"format": "text"},
		"db":       map[string]string{"type": "badgerv2", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{
			"provisioners": []any{
				map[string]any{"type": "JWK", "name": Provisioner, "key": jwk, "claims": claims, "options": options},
				map[string]any{"type": "X5C", "name": X5CProvisioner, "roots": x5cRoots, "claims": claims, "options": options},
			},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pemBlock("EC PRIVATE KEY", der)
}
