package ca_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// signCA signs a CA certificate for pub with parent (self-signed when
// parent is nil) and returns it as an authority holding key.
func signCA(t *testing.T, parent *ca.Authority, key crypto.Signer, name string, now time.Time, ttl time.Duration, mutate func(*x509.Certificate)) *ca.Authority {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ttl),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if mutate != nil {
		mutate(tmpl)
	}
	issuerCert, signer := tmpl, key
	var chain []*x509.Certificate
	if parent != nil {
		issuerCert, signer = parent.Certificate, parent.Signer
		if string(parent.Certificate.RawIssuer) != string(parent.Certificate.RawSubject) {
			chain = append([]*x509.Certificate{parent.Certificate}, parent.Chain...)
		}
	}
	return &ca.Authority{Certificate: testkit.Certificate(t, tmpl, issuerCert, key.Public(), signer), Signer: key, Chain: chain}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadPluggedCAIstioCACerts(t *testing.T) {
	now := time.Now()
	root, _ := testkit.IstioRoot(t, "plugged-root", "cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
	inter := testkit.IstioIntermediate(t, root, "plugged-inter", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	files := testkit.WriteCACerts(t, t.TempDir(), inter, root.Certificate)

	p, err := ca.LoadPluggedCA(files, now, 24*time.Hour)
	if err != nil {
		t.Fatalf("LoadPluggedCA(istio cacerts): %v", err)
	}
	if !p.Authority.Certificate.Equal(inter.Certificate) || len(p.Authority.Chain) != 0 {
		t.Errorf("authority = %s with chain of %d, want the intermediate signed directly by the root", p.Authority.Certificate.Subject, len(p.Authority.Chain))
	}
	if len(p.Roots) != 1 || !p.Roots[0].Equal(root.Certificate) {
		t.Errorf("roots = %d certificates, want root-cert.pem's root", len(p.Roots))
	}
	// The loaded key signs what verifies under the root: the authority is usable.
	leaf, err := p.Authority.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "plugged-leaf").Public(), TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Certificate)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		Intermediates: poolOf(inter.Certificate)}); err != nil {
		t.Errorf("leaf signed with the plugged CA does not verify to root-cert.pem: %v", err)
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// TestLoadPluggedCAChainForms loads a three-level tree (root, a middle CA,
// the plugged intermediate) with cert-chain.pem in the forms operators
// write it.
func TestLoadPluggedCAChainForms(t *testing.T) {
	now := time.Now()
	root := signCA(t, nil, testkit.Key(t, "forms-root"), "root", now, 1000*time.Hour, nil)
	mid := signCA(t, root, testkit.Key(t, "forms-mid"), "mid", now, 900*time.Hour, nil)
	inter := signCA(t, mid, testkit.Key(t, "forms-inter"), "inter", now, 800*time.Hour, nil)
	for name, chain := range map[string][]*x509.Certificate{
		"intermediate, middle, root": {inter.Certificate, mid.Certificate, root.Certificate},
		"middle and root":            {mid.Certificate, root.Certificate},
		"middle only":                {mid.Certificate},
	} {
		t.Run(name, func(t *testing.T) {
			files := testkit.WriteCACerts(t, t.TempDir(), inter, root.Certificate)
			writeFile(t, files.ChainFile, trust.EncodeCertificates(chain...))
			p, err := ca.LoadPluggedCA(files, now, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Authority.Chain) != 1 || !p.Authority.Chain[0].Equal(mid.Certificate) {
				t.Errorf("chain = %d certificates, want exactly the middle CA", len(p.Authority.Chain))
			}
		})
	}
}

// TestLoadPluggedCARefuses: every broken cacerts set is refused with an
// error naming the problem, and nothing is returned.
func TestLoadPluggedCARefuses(t *testing.T) {
	now := time.Now()
	root := signCA(t, nil, testkit.Key(t, "refuse-root"), "root", now, 1000*time.Hour, nil)
	other := signCA(t, nil, testkit.Key(t, "refuse-other"), "other root", now, 1000*time.Hour, nil)
	good := signCA(t, root, testkit.Key(t, "refuse-inter"), "inter", now, 800*time.Hour, nil)
	pathLen0 := signCA(t, root, testkit.Key(t, "refuse-pl0"), "pathlen0", now, 800*time.Hour, func(c *x509.Certificate) { c.MaxPathLenZero = true })
	belowPathLen0 := signCA(t, pathLen0, testkit.Key(t, "refuse-sub"), "below pathlen0", now, 700*time.Hour, nil)
	constrained := signCA(t, root, testkit.Key(t, "refuse-nc"), "constrained", now, 800*time.Hour, func(c *x509.Certificate) {
		c.PermittedDNSDomains, c.PermittedDNSDomainsCritical = []string{"example.org"}, true
	})
	outside := signCA(t, constrained, testkit.Key(t, "refuse-outside"), "outside", now, 700*time.Hour, func(c *x509.Certificate) {
		c.DNSNames = []string{"istiod.istio-system.svc"}
	})
	noCertSign := signCA(t, root, testkit.Key(t, "refuse-ku"), "no cert sign", now, 800*time.Hour, func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageDigitalSignature
	})
	short := signCA(t, root, testkit.Key(t, "refuse-short"), "short", now, 2*time.Hour, nil)
	leafKey := testkit.Key(t, "refuse-leaf")
	leaf, err := good.SignLeaf(ca.LeafRequest{PublicKey: leafKey.Public(), TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		// write sets up dir's files; edit changes them afterwards.
		inter *ca.Authority
		edit  func(t *testing.T, f ca.PluggedFiles)
		now   time.Time
		want  string
	}{
		{"key of another certificate", good, func(t *testing.T, f ca.PluggedFiles) {
			other := testkit.WriteCACerts(t, t.TempDir(), short, root.Certificate)
			data, _ := os.ReadFile(other.KeyFile)
			writeFile(t, f.KeyFile, data)
		}, now, "does not match"},
		{"not a CA", good, func(t *testing.T, f ca.PluggedFiles) {
			writeFile(t, f.CertFile, trust.EncodeCertificates(leaf))
		}, now, "is not a CA"},
		{"two certificates in ca-cert.pem", good, func(t *testing.T, f ca.PluggedFiles) {
			writeFile(t, f.CertFile, trust.EncodeCertificates(good.Certificate, root.Certificate))
		}, now, "holds 2 certificates"},
		{"root-cert.pem of another root", good, func(t *testing.T, f ca.PluggedFiles) {
			writeFile(t, f.RootFile, trust.EncodeCertificates(other.Certificate))
		}, now, "does not chain"},
		{"root-cert.pem not self-signed", good, func(t *testing.T, f ca.PluggedFiles) {
			writeFile(t, f.RootFile, trust.EncodeCertificates(good.Certificate))
		}, now, "is not a self-signed CA"},
		{"chain with a certificate off the path", good, func(t *testing.T, f ca.PluggedFiles) {
			writeFile(t, f.ChainFile, trust.EncodeCertificates(good.Certificate, short.Certificate, root.Certificate))
		}, now, "not its path"},
		{"missing middle CA", belowPathLen0, func(t *testing.T, f ca.PluggedFiles) {
			writeFile(t, f.ChainFile, trust.EncodeCertificates(belowPathLen0.Certificate, root.Certificate))
		}, now, "does not chain"},
		{"the root itself as ca-cert.pem", root, func(t *testing.T, f ca.PluggedFiles) {
			writeFile(t, f.ChainFile, trust.EncodeCertificates(root.Certificate))
		}, now, "is a root of"},
		{"path length exceeded", belowPathLen0, nil, now, "path length 0"},
		{"outside the name constraints above", outside, nil, now, "does not chain"},
		{"no certificate signing", noCertSign, nil, now, "lacks certificate signing"},
		{"expired", good, nil, now.Add(900 * time.Hour), "does not chain"},
		{"not yet valid", good, nil, now.Add(-2 * time.Hour), "does not chain"},
		{"less than the minimum left", short, nil, now, "at least 24h0m0s must be left"},
		{"key readable by others", good, func(t *testing.T, f ca.PluggedFiles) {
			if err := os.Chmod(f.KeyFile, 0o644); err != nil {
				t.Fatal(err)
			}
		}, now, "must not be accessible by group or others"},
		{"missing root file", good, func(t *testing.T, f ca.PluggedFiles) {
			if err := os.Remove(f.RootFile); err != nil {
				t.Fatal(err)
			}
		}, now, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := testkit.WriteCACerts(t, t.TempDir(), tt.inter, root.Certificate)
			if tt.edit != nil {
				tt.edit(t, files)
			}
			p, err := ca.LoadPluggedCA(files, tt.now, 24*time.Hour)
			if err == nil {
				t.Fatalf("LoadPluggedCA succeeded with %s, want an error containing %q", p.Authority.Certificate.Subject, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
			if p != nil {
				t.Error("a CA was returned with the error")
			}
		})
	}
}

// TestPluggedCAEndsWithItsRoot: an operator's intermediate may outlive its
// root (Istio's tools/certs makes both the same length, the intermediate
// a little later); what it signs must not outlive the root, its usable
// life is the root's, and after the root's end it signs nothing.
func TestPluggedCAEndsWithItsRoot(t *testing.T) {
	now := time.Now()
	root := signCA(t, nil, testkit.Key(t, "ends-root"), "root", now, 48*time.Hour, nil)
	inter := signCA(t, root, testkit.Key(t, "ends-inter"), "inter", now, 1000*time.Hour, nil)
	files := testkit.WriteCACerts(t, t.TempDir(), inter, root.Certificate)

	if _, err := ca.LoadPluggedCA(files, now, 72*time.Hour); err == nil || !strings.Contains(err.Error(), "at least 72h0m0s must be left") {
		t.Errorf("LoadPluggedCA with 72h minimum and a root ending in 48h: err = %v, want the minimum refused", err)
	}
	p, err := ca.LoadPluggedCA(files, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key := testkit.Key(t, "ends-leaf")
	leaf, err := p.Authority.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), TTL: 100 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotAfter.Equal(root.Certificate.NotAfter) {
		t.Errorf("leaf NotAfter = %s, want the root's end %s", leaf.NotAfter, root.Certificate.NotAfter)
	}
	_, err = p.Authority.SignLeaf(ca.LeafRequest{PublicKey: key.Public(), TTL: time.Hour, Now: root.Certificate.NotAfter.Add(time.Minute)})
	if !errors.Is(err, ca.ErrCAExpired) {
		t.Errorf("SignLeaf after the root's end: err = %v, want ErrCAExpired", err)
	}
}
