package root

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/vault"
	"github.com/meshca/meshca/internal/testkit"
)

// writeAdoptFiles writes cert and keyPEM as an operator mounts istiod's
// istio-ca-secret (ca-cert.pem, ca-key.pem) and returns their names.
func writeAdoptFiles(t *testing.T, cert *x509.Certificate, keyPEM []byte) ca.AdoptFiles {
	t.Helper()
	dir := t.TempDir()
	f := ca.AdoptFiles{CertFile: filepath.Join(dir, testkit.IstioCACertFile), KeyFile: filepath.Join(dir, testkit.IstioCAKeyFile)}
	if err := os.WriteFile(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.KeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAdoptIstiodRoot: a root service on an empty store takes istiod's
// self-signed root over (its key copied, 0600), signs under it, and a
// rotation creates a meshca root of another name cross-signed with it, so
// that a leaf under the adopted root verifies against the new root alone
// (crypto/x509 and OpenSSL). Restarting with the same adoptRoot changes
// nothing; with another root it fails.
func TestAdoptIstiodRoot(t *testing.T) {
	now := newFakeClock().Now()
	istiod, keyPEM := testkit.IstioRoot(t, "adopt-istiod", "cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
	files := writeAdoptFiles(t, istiod.Certificate, keyPEM)
	h := newHarness(t, func(c *Config) { c.Adopt = &AdoptRoot{AdoptFiles: files} })
	if got := h.activeRoot(); !got.Equal(istiod.Certificate) {
		t.Fatalf("active root %q, want istiod's", got.Subject)
	}
	ref := h.root.Roots()[0].KeyRef
	info, err := os.Stat(filepath.Join(h.cfg.Keys.(FileKeys).Dir, ref))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("copied key %s: %v, mode %v; want a 0600 file", ref, err, info.Mode().Perm())
	}
	if ev := h.events("root.adopt"); len(ev) != 1 || !strings.Contains(ev[0].Detail, files.CertFile) {
		t.Errorf("audit events root.adopt: %+v", ev)
	}
	// istiod's root may not sign CRLs: none is published for it, said once.
	if crls := h.root.RootCRLs(); len(crls) != 0 {
		t.Errorf("%d root CRLs published for a root without CRL signing", len(crls))
	}
	h.refresh()
	if n := strings.Count(h.logs.String(), "does not allow signing CRLs"); n != 1 {
		t.Errorf("the missing CRL signing was logged %d times, want once", n)
	}
	addr := h.serve()
	iss := h.mustEnroll(addr, "east", "cluster.local")
	if !signedBy(iss.inter, istiod.Certificate, h.clock.Now()) {
		t.Fatal("the cluster intermediate is not signed by the adopted root")
	}

	st, err := h.root.rotate(context.Background(), 0, "admin:test", false)
	if err != nil {
		t.Fatal(err)
	}
	next := st.Cert
	if string(next.RawSubject) == string(istiod.Certificate.RawSubject) {
		t.Fatal("the new root has the adopted root's name")
	}
	b, _ := h.root.Current()
	istiodByNew, newByIstiod := crossOf(b, istiod.Certificate, next), crossOf(b, next, istiod.Certificate)
	if istiodByNew == nil || newByIstiod == nil {
		t.Fatalf("bundle lacks a cross certificate between the adopted and the new root (%d)", len(b.CrossSigned))
	}
	u, _ := url.Parse("spiffe://cluster.local/ns/default/sa/web")
	leaf, err := iss.authority(t).SignLeaf(ca.LeafRequest{PublicKey: newKey(t).Public(), URIs: []*url.URL{u}, TTL: time.Hour, Now: h.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyAt(leaf, next, h.clock.Now(), iss.inter, istiodByNew); err != nil {
		t.Errorf("crypto/x509: leaf under the adopted root, anchor the new root: %v", err)
	}
	if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{next}, []*x509.Certificate{iss.inter, istiodByNew}, leaf, h.clock.Now()); err != nil {
		t.Errorf("openssl: leaf under the adopted root, anchor the new root: %v\n%s", err, out)
	}

	// Same adoptRoot again: nothing changes.
	again := h.start()
	if n := len(again.Roots()); n != 2 {
		t.Fatalf("after a restart with the same adoptRoot: %d roots, want 2", n)
	}
	// Another root: refused.
	other, otherKey := testkit.IstioRoot(t, "adopt-other", "cluster.local", now.Add(-time.Hour), 365*24*time.Hour)
	cfg := h.cfg
	cfg.Adopt = &AdoptRoot{AdoptFiles: writeAdoptFiles(t, other.Certificate, otherKey)}
	if r, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "not among") {
		if r != nil {
			_ = r.Close()
		}
		t.Fatalf("adopting into a store with roots: %v, want a refusal", err)
	}
}

func verifyAt(leaf, anchor *x509.Certificate, now time.Time, inters ...*x509.Certificate) error {
	roots, pool := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor)
	for _, c := range inters {
		pool.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// TestAdoptRootRefuses: each unusable root is refused with its reason, and
// nothing is recorded or copied.
func TestAdoptRootRefuses(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	istiod, keyPEM := testkit.IstioRoot(t, "adopt-istiod", "cluster.local", now.Add(-time.Hour), 10*365*24*time.Hour)
	_, otherKey := testkit.IstioRoot(t, "adopt-other", "cluster.local", now.Add(-time.Hour), 365*24*time.Hour)
	short, shortKey := testkit.IstioRoot(t, "adopt-istiod", "cluster.local", now.Add(-time.Hour), 48*time.Hour)
	inter := testkit.IstioIntermediate(t, istiod, "adopt-inter", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	interKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: mustPKCS8(t, inter.Signer)})
	variant := func(mod func(*x509.Certificate)) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(5), Subject: pkix.Name{Organization: []string{"cluster.local"}},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
		mod(tmpl)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, istiod.Signer.Public(), istiod.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return mustParse(t, der)
	}
	for _, tc := range []struct {
		name  string
		files func(t *testing.T) ca.AdoptFiles
		want  string
	}{
		{"key of another root", func(t *testing.T) ca.AdoptFiles { return writeAdoptFiles(t, istiod.Certificate, otherKey) }, "does not match"},
		{"an intermediate", func(t *testing.T) ca.AdoptFiles { return writeAdoptFiles(t, inter.Certificate, interKey) }, "not self-signed"},
		{"too little life left", func(t *testing.T) ca.AdoptFiles { return writeAdoptFiles(t, short.Certificate, shortKey) }, "must be left"},
		{"not a CA", func(t *testing.T) ca.AdoptFiles {
			return writeAdoptFiles(t, variant(func(c *x509.Certificate) { c.IsCA = false }), keyPEM)
		}, "not a CA"},
		{"no certificate signing", func(t *testing.T) ca.AdoptFiles {
			return writeAdoptFiles(t, variant(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), keyPEM)
		}, "certificate signing"},
		{"path length 0", func(t *testing.T) ca.AdoptFiles {
			return writeAdoptFiles(t, variant(func(c *x509.Certificate) { c.MaxPathLenZero = true }), keyPEM)
		}, "path length 0"},
		{"not yet valid", func(t *testing.T) ca.AdoptFiles {
			return writeAdoptFiles(t, variant(func(c *x509.Certificate) { c.NotBefore = now.Add(time.Hour) }), keyPEM)
		}, "not valid before"},
		{"key readable by others", func(t *testing.T) ca.AdoptFiles {
			f := writeAdoptFiles(t, istiod.Certificate, keyPEM)
			if err := os.Chmod(f.KeyFile, 0o644); err != nil {
				t.Fatal(err)
			}
			return f
		}, "must not be accessible"},
		{"two certificates", func(t *testing.T) ca.AdoptFiles {
			f := writeAdoptFiles(t, istiod.Certificate, keyPEM)
			pemBoth := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: istiod.Certificate.Raw})
			pemBoth = append(pemBoth, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: short.Certificate.Raw})...)
			if err := os.WriteFile(f.CertFile, pemBoth, 0o644); err != nil {
				t.Fatal(err)
			}
			return f
		}, "2 certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, keyDir := openSQLite(t, clock.Now), t.TempDir()
			cfg := Config{Store: db, Keys: FileKeys{Dir: keyDir}, Hosts: []string{"localhost"}, Now: clock.Now,
				Logger: slog.New(slog.NewTextHandler(&testkit.LogBuffer{}, nil)), Adopt: &AdoptRoot{AdoptFiles: tc.files(t)}}
			r, err := New(context.Background(), cfg)
			if err == nil {
				_ = r.Close()
				t.Fatal("adopted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if rows, _ := db.Roots(context.Background()); len(rows) != 0 {
				t.Errorf("%d roots recorded", len(rows))
			}
			if ents, _ := os.ReadDir(keyDir); len(ents) != 0 {
				t.Errorf("key directory holds %d files", len(ents))
			}
		})
	}
}

// TestAdoptRootConfig: adoption needs file keys and no upstream PKI.
func TestAdoptRootConfig(t *testing.T) {
	adopt := &AdoptRoot{AdoptFiles: ca.AdoptFiles{CertFile: "ca-cert.pem", KeyFile: "ca-key.pem"}}
	base := Config{Store: openSQLite(t, time.Now), Keys: FileKeys{Dir: t.TempDir()}, Hosts: []string{"localhost"}, Adopt: adopt}
	if err := base.Validate(); err != nil {
		t.Fatalf("file keys: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"vault keys":    func(c *Config) { c.Keys = VaultKeys{Config: vault.Config{Address: "https://vault.example:8200"}} },
		"upstream":      func(c *Config) { c.Upstream = &fakeUpstream{} },
		"no key file":   func(c *Config) { c.Adopt = &AdoptRoot{AdoptFiles: ca.AdoptFiles{CertFile: "ca-cert.pem"}} },
		"negative life": func(c *Config) { c.Adopt = &AdoptRoot{AdoptFiles: adopt.AdoptFiles, MinRemaining: -time.Hour} },
	} {
		cfg := base
		mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustPKCS8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
