package issuer_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

const (
	goodToken = "good-token"
	webID     = "spiffe://cluster.local/ns/default/sa/web"
)

type fixture struct {
	tree *testkit.Tree
	rec  *fakeRecorder
	iss  *issuer.Issuer
	now  time.Time
}

func newFixture(t *testing.T, opts testkit.Options) *fixture {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = t0
	}
	f := &fixture{tree: testkit.New(t, opts), rec: &fakeRecorder{}, now: opts.Now.Add(time.Minute)}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: f.tree.TrustDomain, Cluster: "dev",
		Authority: f.tree.Intermediate, Bundle: f.tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{
			goodToken: {Cluster: "dev", Namespace: "default", ServiceAccount: "web", PodName: "web-1", PodUID: "uid-1"},
		}},
		Recorder: f.rec,
		Now:      func() time.Time { return f.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.iss = iss
	return f
}

func TestIssueKeyTypes(t *testing.T) {
	for _, kind := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, testkit.Options{})
			chain, err := f.iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, kind), nil)})
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 3 {
				t.Fatalf("chain has %d certificates, want leaf, intermediate, root", len(chain))
			}
			if !chain[1].Equal(f.tree.Intermediate.Certificate) || !chain[2].Equal(f.tree.Root.Certificate) {
				t.Error("chain is not leaf, intermediate, root")
			}
			xb := x509bundle.FromX509Authorities(f.tree.TrustDomain, f.tree.Bundle.Roots())
			id, _, err := x509svid.Verify(chain[:2], xb, x509svid.WithTime(f.now))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if id.String() != webID {
				t.Errorf("SPIFFE ID %s, want %s", id, webID)
			}
			leaf := chain[0]
			if leaf.Subject.CommonName != "" || len(leaf.DNSNames) != 0 {
				t.Errorf("leaf carries names beyond the SPIFFE ID: CN=%q DNS=%v", leaf.Subject.CommonName, leaf.DNSNames)
			}
			if f.rec.count() != 1 {
				t.Fatalf("recorded %d certificates, want 1", f.rec.count())
			}
			got := f.rec.certs[0]
			if got.Serial != trust.SerialHex(leaf.SerialNumber) || got.SPIFFEID != webID || got.Cluster != "dev" || got.PodUID != "uid-1" || !got.NotAfter.Equal(leaf.NotAfter) || len(got.Fingerprint) != 64 {
				t.Errorf("record %+v does not describe the leaf", got)
			}
			ev := f.rec.events[0]
			if ev.Action != "certificate.issue" || ev.Serial != got.Serial || ev.Actor != "system:serviceaccount:default:web" {
				t.Errorf("audit event %+v", ev)
			}
		})
	}
}

func TestIssueAcceptsOwnURISAN(t *testing.T) {
	f := newFixture(t, testkit.Options{})
	csr := csrPEM(t, testKey(t, "p256"), &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, webID)}})
	if _, err := f.iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csr}); err != nil {
		t.Fatal(err)
	}
}

func TestIssueRejections(t *testing.T) {
	p256 := testKey(t, "p256")
	goodCSR := csrPEM(t, p256, nil)
	badSig := tamperSignature(t, goodCSR)
	for _, tc := range []struct {
		name    string
		req     issuer.Request
		want    error
		message string
	}{
		{"forged URI SAN", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/kube-system/sa/admin")}})}, issuer.ErrPermissionDenied, "asks for spiffe://cluster.local/ns/kube-system/sa/admin"},
		{"foreign trust domain URI SAN", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://other.example/ns/default/sa/web")}})}, issuer.ErrPermissionDenied, "other.example"},
		{"non-SPIFFE URI SAN", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "https://example.com/x")}})}, issuer.ErrInvalidRequest, "not a SPIFFE ID"},
		{"two URI SANs", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, webID), mustURL(t, webID)}})}, issuer.ErrInvalidRequest, "2 URI SANs"},
		{"DNS SAN", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{DNSNames: []string{"kubernetes.default.svc"}})}, issuer.ErrPermissionDenied, "may not have DNS names"},
		{"IP SAN", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}})}, issuer.ErrInvalidRequest, "IP SANs"},
		{"email SAN", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{EmailAddresses: []string{"a@b.c"}})}, issuer.ErrInvalidRequest, "email SANs"},
		{"common name", issuer.Request{Token: goodToken, CSR: csrPEM(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin"}})}, issuer.ErrInvalidRequest, "common name"},
		{"RSA-1024", issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "rsa1024"), nil)}, issuer.ErrInvalidRequest, "RSA key of 1024 bits"},
		{"ECDSA P-224", issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p224"), nil)}, issuer.ErrInvalidRequest, "P-224"},
		{"bad CSR signature", issuer.Request{Token: goodToken, CSR: badSig}, issuer.ErrInvalidRequest, "signature is invalid"},
		{"garbage PEM", issuer.Request{Token: goodToken, CSR: []byte("-----BEGIN CERTIFICATE REQUEST-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE REQUEST-----\n")}, issuer.ErrInvalidRequest, "parse csr"},
		{"not PEM", issuer.Request{Token: goodToken, CSR: []byte("hello")}, issuer.ErrInvalidRequest, "not PEM"},
		{"wrong PEM type", issuer.Request{Token: goodToken, CSR: []byte(strings.Replace(string(goodCSR), "CERTIFICATE REQUEST", "CERTIFICATE", 2))}, issuer.ErrInvalidRequest, "want CERTIFICATE REQUEST"},
		{"trailing data", issuer.Request{Token: goodToken, CSR: append(append([]byte{}, goodCSR...), goodCSR...)}, issuer.ErrInvalidRequest, "after the PEM block"},
		{"empty CSR", issuer.Request{Token: goodToken}, issuer.ErrInvalidRequest, "empty"},
		{"oversized CSR", issuer.Request{Token: goodToken, CSR: append([]byte(strings.Repeat(" ", issuer.MaxCSRBytes)), goodCSR...)}, issuer.ErrInvalidRequest, "the limit is 16384"},
		{"negative TTL", issuer.Request{Token: goodToken, CSR: goodCSR, TTL: -time.Second}, issuer.ErrInvalidRequest, "negative"},
		{"unknown token", issuer.Request{Token: "forged", CSR: goodCSR}, issuer.ErrUnauthenticated, "unknown token"},
		{"no token", issuer.Request{CSR: goodCSR}, issuer.ErrUnauthenticated, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testkit.Options{})
			chain, err := f.iss.Issue(context.Background(), tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("err = %q, want it to mention %q", err, tc.message)
			}
			if chain != nil {
				t.Error("a certificate was returned with an error")
			}
			if n := f.rec.count(); n != 0 {
				t.Errorf("a rejected request left %d store rows", n)
			}
		})
	}
}

func TestIssueFailsClosed(t *testing.T) {
	t.Run("store down", func(t *testing.T) {
		f := newFixture(t, testkit.Options{})
		f.rec.err = errors.New("database is locked")
		chain, err := f.iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
		if !errors.Is(err, issuer.ErrUnavailable) || chain != nil {
			t.Fatalf("chain=%v err=%v, want no certificate and ErrUnavailable", chain, err)
		}
	})
	t.Run("attestation unavailable", func(t *testing.T) {
		f := newFixture(t, testkit.Options{})
		iss, err := issuer.New(issuer.Config{
			TrustDomain: f.tree.TrustDomain, Cluster: "dev", Authority: f.tree.Intermediate, Bundle: f.tree.Bundle,
			Attestor: &fakeAttestor{err: errors.Join(attest.ErrUnavailable, errors.New("apiserver down"))},
			Recorder: f.rec, Now: func() time.Time { return f.now },
		})
		if err != nil {
			t.Fatal(err)
		}
		chain, err := iss.Issue(context.Background(), issuer.Request{Token: "x", CSR: csrPEM(t, testKey(t, "p256"), nil)})
		if !errors.Is(err, issuer.ErrUnavailable) || errors.Is(err, issuer.ErrUnauthenticated) || chain != nil {
			t.Fatalf("chain=%v err=%v, want ErrUnavailable only", chain, err)
		}
		if f.rec.count() != 0 {
			t.Error("store row written")
		}
	})
	t.Run("intermediate expired", func(t *testing.T) {
		f := newFixture(t, testkit.Options{IntermediateTTL: time.Hour})
		f.now = t0.Add(2 * time.Hour)
		_, err := f.iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
		if !errors.Is(err, issuer.ErrUnavailable) || !errors.Is(err, ca.ErrCAExpired) {
			t.Fatalf("err = %v, want ErrUnavailable wrapping ErrCAExpired", err)
		}
		if f.rec.count() != 0 {
			t.Error("store row written")
		}
	})
}

func TestTTLClamping(t *testing.T) {
	for _, tc := range []struct {
		name      string
		interTTL  time.Duration
		requested time.Duration
		want      time.Duration // from issuance time; 0 = the intermediate's NotAfter
	}{
		{"default", 0, 0, time.Hour},
		{"in range", 0, 2 * time.Hour, 2 * time.Hour},
		{"below minimum", 0, time.Minute, 5 * time.Minute},
		{"above maximum", 0, 90 * 24 * time.Hour, 24 * time.Hour},
		{"beyond intermediate", 30 * time.Minute, time.Hour, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testkit.Options{IntermediateTTL: tc.interTTL})
			chain, err := f.iss.Issue(context.Background(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil), TTL: tc.requested})
			if err != nil {
				t.Fatal(err)
			}
			want := f.now.Add(tc.want)
			if tc.want == 0 {
				want = f.tree.Intermediate.Certificate.NotAfter
			}
			if got := chain[0].NotAfter; !got.Equal(want) {
				t.Errorf("NotAfter = %v, want %v", got, want)
			}
			if chain[0].NotAfter.After(chain[1].NotAfter) {
				t.Error("leaf outlives its intermediate")
			}
		})
	}
}

func TestSetAuthorityRejectsForeignIntermediate(t *testing.T) {
	f := newFixture(t, testkit.Options{})
	other := testkit.New(t, testkit.Options{TrustDomain: "other.example", Now: t0})
	if err := f.iss.SetAuthority(other.Intermediate, f.tree.Bundle); err == nil {
		t.Error("accepted an intermediate constrained to another trust domain")
	}
}

func tamperSignature(t *testing.T, csrPEMBytes []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(csrPEMBytes)
	der := append([]byte{}, block.Bytes...)
	der[len(der)-5] ^= 0xff
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t,
		&issuer.Config{},
		&issuer.Config{MinTTL: time.Hour, MaxTTL: time.Minute},
		&issuer.UpstreamConfig{},
		&issuer.UpstreamConfig{Address: "root.example:8443", CredentialDir: t.TempDir()},
		&issuer.DenyListConfig{},
		&issuer.DenyListConfig{Cluster: "c1", PollInterval: time.Minute},
		&issuer.AdminConfig{},
		&issuer.CRLSignerConfig{},
		&issuer.IntermediatesConfig{},
		&issuer.LocalRootConfig{},
		&issuer.PluggedCAConfig{},
		&issuer.PluggedCAConfig{Files: ca.PluggedFiles{CertFile: "c", KeyFile: "k", RootFile: "r"}, PollInterval: -time.Second},
	)
}
