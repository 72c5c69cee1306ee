package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// memUpstream is an upstream PKI in memory (the one-method seam caIssuer):
// a root that certifies the requested key as upstream.Authority's answer
// would, or fails with err.
type memUpstream struct {
	root  *ca.Authority
	mu    sync.Mutex
	calls int
	err   error
}

func newMemUpstream(t *testing.T) *memUpstream {
	return &memUpstream{root: testkit.Root(t, "mem-upstream-root", time.Now(), 400*24*time.Hour)}
}

func (m *memUpstream) Issue(_ context.Context, req upstream.Request) (*upstream.Issued, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.err != nil {
		return nil, m.err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "meshca CA", Organization: []string{"meshca"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(90 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.root.Certificate, req.Signer.Public(), m.root.Signer)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &upstream.Issued{Certificate: c, Root: m.root.Certificate}, nil
}

func (m *memUpstream) set(err error) (calls int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
	return m.calls
}

// TestUpstreamPKIReplicas: replicas of a standalone issuer on one store
// and one root key each get a CA certificate of their own for the key
// from the upstream, pinned by the key's public key; a restart uses the
// certificate kept in DATA_DIR without asking the upstream; a replica with
// another key, or with none once one is recorded, is refused; each
// replica's bundle verifies for a receiver holding the other's
// certificate; intermediates chain to the upstream's root (openssl); and
// the renewer classifies refusals and outages for the renewal loop.
func TestUpstreamPKIReplicas(t *testing.T) {
	ctx := t.Context()
	db, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	up := newMemUpstream(t)
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	rootDir := t.TempDir()
	replica := func(dataDir, rootDir string) Config {
		return Config{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev", DataDir: dataDir, RootDir: rootDir}
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a, ra, err := upstreamPKIRoot(ctx, replica(dirA, rootDir), db, up, log)
	if err != nil {
		t.Fatalf("replica a: %v", err)
	}
	recorded, err := db.StandaloneRoot(ctx, "cluster.local", "dev")
	if want, _ := spkiPin(ra.signer); err != nil || recorded != want || !strings.HasPrefix(recorded, "spki:") {
		t.Errorf("recorded root %q (%v), want the key's pin %q", recorded, err, want)
	}
	calls := up.set(nil)
	again, _, err := upstreamPKIRoot(ctx, replica(dirA, rootDir), db, up, log)
	if err != nil || !again.CA.Certificate.Equal(a.CA.Certificate) || up.set(nil) != calls {
		t.Errorf("restart of a: %v; want the kept certificate and no request to the upstream", err)
	}
	b, _, err := upstreamPKIRoot(ctx, replica(dirB, rootDir), db, up, log)
	if err != nil {
		t.Fatalf("replica b: %v", err)
	}
	if b.CA.Certificate.Equal(a.CA.Certificate) || !bytes.Equal(b.CA.Certificate.RawSubjectPublicKeyInfo, a.CA.Certificate.RawSubjectPublicKeyInfo) {
		t.Error("replicas a and b do not hold certificates of their own for one key")
	}

	otherRoot := t.TempDir()
	if _, _, err := upstreamPKIRoot(ctx, replica(t.TempDir(), otherRoot), db, up, log); err == nil || !strings.Contains(err.Error(), "holds no root key") {
		t.Errorf("a replica without the key: %v, want it refused", err)
	}
	if _, err := ca.LoadOrCreateKeyFile(filepath.Join(otherRoot, ca.RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := upstreamPKIRoot(ctx, replica(t.TempDir(), otherRoot), db, up, log); err == nil || !strings.Contains(err.Error(), "is not the root the store records") {
		t.Errorf("a replica with another key: %v, want it refused", err)
	}

	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	localA, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: a.CA, Anchor: a.Anchor, Renewer: ra, TrustDomain: td, Cluster: "dev", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	inter, tb, err := localA.NewIntermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := testkit.OpenSSLVerify(t, []*x509.Certificate{up.root.Certificate}, inter.Chain, inter.Certificate, time.Time{}); err != nil {
		t.Errorf("intermediate under the upstream PKI: openssl verify: %v\n%s", err, out)
	}
	holdsB, err := trust.NewBundle(b.CA.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.VerifySignature(holdsB, time.Now()); err != nil {
		t.Errorf("replica a's bundle for a receiver holding b's certificate: %v", err)
	}

	for _, tc := range []struct {
		name    string
		err     error
		refused bool
	}{
		{"refusal", fmt.Errorf("upstream stepcas: sign: %w", upstream.ErrRefused), true},
		{"unusable answer", fmt.Errorf("upstream stepcas: %w: path length 0", upstream.ErrBadCertificate), true},
		{"outage", fmt.Errorf("upstream stepcas: sign: %w: connection refused", grpcx.ErrUnavailable), false},
	} {
		up.set(tc.err)
		_, err := ra.RenewCA(ctx, time.Now())
		if err == nil || errors.Is(err, rotation.ErrRefused) != tc.refused {
			t.Errorf("%s: RenewCA: %v, want refused %v", tc.name, err, tc.refused)
		}
	}
}
