package issuer_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
)

// fakeUpstreamCA certifies key under upRoot for 90 days, as an upstream
// PKI does meshca's CA; while down it is unreachable, and with otherKey it
// certifies a key that is not meshca's.
type fakeUpstreamCA struct {
	upRoot   *ca.Authority
	key      crypto.Signer
	mu       sync.Mutex
	down     bool
	otherKey crypto.Signer
	calls    []time.Time
}

func (f *fakeUpstreamCA) RenewCA(_ context.Context, now time.Time) (issuer.UpstreamCA, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, now)
	if f.down {
		return issuer.UpstreamCA{}, fmt.Errorf("%w: connection refused", grpcx.ErrUnavailable)
	}
	key := f.key
	if f.otherKey != nil {
		key = f.otherKey
	}
	return issuer.UpstreamCA{CA: certifyCA(f.upRoot, key, now), Anchor: f.upRoot.Certificate}, nil
}

func (f *fakeUpstreamCA) set(down bool, otherKey crypto.Signer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.otherKey = down, otherKey
}

func (f *fakeUpstreamCA) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

func certifyCA(upRoot *ca.Authority, key crypto.Signer, now time.Time) *ca.Authority {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "meshca CA", Organization: []string{"meshca"}},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(90 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, upRoot.Certificate, key.Public(), upRoot.Signer)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	a, err := ca.NewAuthority(c, key)
	if err != nil {
		panic(err)
	}
	return a
}

// verifiesUnder reports whether a's certificate chains through a.Chain to
// the bundle's roots, and through the bundle's authorities alone.
func verifiesUnder(t *testing.T, a *ca.Authority, b *trust.TrustBundle) {
	t.Helper()
	inters := x509.NewCertPool()
	for _, c := range a.Chain {
		inters.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: b.OwnRoots().Pool(), Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := a.Certificate.Verify(opts); err != nil {
		t.Errorf("intermediate %s does not chain to the upstream root: %v", trust.SerialHex(a.Certificate.SerialNumber), err)
	}
	if _, err := a.Certificate.Verify(x509.VerifyOptions{Roots: b.OwnAuthorities().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("intermediate %s does not verify against meshca's CA of the bundle: %v", trust.SerialHex(a.Certificate.SerialNumber), err)
	}
}

// TestLocalRootRenewsUnderUpstream: a standalone issuer's CA whose
// certificate an upstream PKI issued is renewed for the same key once a
// third of its life is left. While the upstream is down the current CA
// keeps minting intermediates and the renewal is retried with backoff
// doubling from RenewBackoff up to an hour; once it is back the renewed
// certificate replaces the bundle's authority under the same sequence,
// signed so that an agent holding only the first certificate accepts it,
// and intermediates minted before and after verify under it. A
// certificate for another key is refused and retried an hour later.
func TestLocalRootRenewsUnderUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, logs := captureLogs(t)
		start := time.Now()
		upRoot := testkit.Root(t, "upstream-root", start, 400*24*time.Hour)
		key := testkit.Key(t, "standalone-ca")
		up := &fakeUpstreamCA{upRoot: upRoot, key: key}
		first := certifyCA(upRoot, key, start)
		tree := testkit.New(t, testkit.Options{})
		var kept []*x509.Certificate // what Renewed was given
		local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{
			Root: first, Anchor: upRoot.Certificate, Renewer: up, TrustDomain: tree.TrustDomain, Cluster: "east",
			RenewBackoff: time.Minute, Logger: log,
			Renewed: func(u issuer.UpstreamCA) { kept = append(kept, u.CA.Certificate) },
		})
		if err != nil {
			t.Fatal(err)
		}
		b0, changed := local.Current()
		if !b0.OwnRoots().Roots()[0].Equal(upRoot.Certificate) || !b0.OwnAuthorities().Roots()[0].Equal(first.Certificate) {
			t.Fatal("the bundle's root is not the upstream's, or its authority not meshca's CA")
		}
		if err := b0.VerifySignature(bundleOf(t, first.Certificate), start); err != nil {
			t.Fatalf("bundle signature: %v", err)
		}
		before, _, err := local.NewIntermediate(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		verifiesUnder(t, before, b0)

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- local.Run(ctx) }()

		due := rotation.CADueAt(rotation.Validity{NotBefore: first.Certificate.NotBefore, NotAfter: first.Certificate.NotAfter})
		up.set(true, nil)
		time.Sleep(time.Until(due) - time.Second)
		synctest.Wait()
		if n := len(up.callTimes()); n != 0 {
			t.Fatalf("%d renewals before a third of the life is left", n)
		}
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		calls := up.callTimes()
		if len(calls) < 6 {
			t.Fatalf("%d attempts in 3 h against a down upstream, want retries with backoff", len(calls))
		}
		for i := 1; i < len(calls); i++ {
			gap := calls[i].Sub(calls[i-1])
			want := min(time.Minute<<(i-1), rotation.MaxCABackoff)
			if gap < want*8/10 || gap > want*12/10 {
				t.Errorf("retry %d after %v, want %v ±20%%", i, gap, want)
			}
		}
		if b, _ := local.Current(); b != b0 {
			t.Error("a failed renewal changed the bundle")
		}
		during, _, err := local.NewIntermediate(t.Context())
		if err != nil {
			t.Fatalf("minting an intermediate while the upstream is down: %v", err)
		}
		verifiesUnder(t, during, b0)
		wantLogLine(t, logs.String(), "renewing meshca's CA certificate from the upstream PKI failed", "connection refused")

		up.set(false, nil)
		select {
		case <-changed:
		case <-time.After(rotation.MaxCABackoff * 2):
			t.Fatal("no renewal within two hours of the upstream's return")
		}
		b1, _ := local.Current()
		renewed := b1.OwnAuthorities().Roots()
		if len(renewed) != 1 || renewed[0].Equal(first.Certificate) || !renewed[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
			t.Fatal("the renewed bundle's authority is not a new certificate for meshca's key")
		}
		if len(kept) != 1 || !kept[0].Equal(renewed[0]) {
			t.Errorf("Renewed was given %d certificates, want the renewed one", len(kept))
		}
		if b1.Sequence != b0.Sequence {
			t.Errorf("sequence %d after renewal, want %d: replicas renewing at other times must serve one sequence", b1.Sequence, b0.Sequence)
		}
		if err := b1.VerifySignature(bundleOf(t, first.Certificate), time.Now()); err != nil {
			t.Errorf("an agent holding the first certificate refuses the renewed bundle: %v", err)
		}
		after, _, err := local.NewIntermediate(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !after.Chain[0].Equal(renewed[0]) {
			t.Error("a new intermediate does not carry the renewed CA certificate")
		}
		// The first intermediate has expired by now; the one minted during
		// the outage, under the first certificate, verifies under the
		// renewed one.
		for _, a := range []*ca.Authority{during, after} {
			verifiesUnder(t, a, b1)
		}

		// The next renewal brings a certificate for another key: refused,
		// retried after an hour, the bundle kept.
		v := rotation.Validity{NotBefore: renewed[0].NotBefore, NotAfter: renewed[0].NotAfter}
		up.set(false, testkit.Key(t, "not-meshca"))
		n := len(up.callTimes())
		time.Sleep(time.Until(rotation.CADueAt(v)) + time.Second)
		synctest.Wait()
		if got := len(up.callTimes()); got != n+1 {
			t.Fatalf("%d attempts at the second renewal, want 1", got-n)
		}
		wantLogLine(t, logs.String(), "the upstream PKI refused to renew", "not for meshca's CA key")
		if b, _ := local.Current(); b != b1 {
			t.Error("a certificate for another key replaced the bundle")
		}
		if len(kept) != 1 {
			t.Error("a refused certificate was given to Renewed, to be kept for the next start")
		}
		time.Sleep(rotation.MaxCABackoff * 3 / 4)
		synctest.Wait()
		if got := len(up.callTimes()); got != n+1 {
			t.Errorf("retried %d times within 45 min of a refusal, want none", got-n-1)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if strings.Contains(logs.String(), "PRIVATE KEY") {
			t.Error("key material logged")
		}
	})
}

func bundleOf(t *testing.T, certs ...*x509.Certificate) *trust.Bundle {
	t.Helper()
	b, err := trust.NewBundle(certs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantLogLine fails unless one line of logs contains every one of substrs.
func wantLogLine(t *testing.T, logs string, substrs ...string) {
	t.Helper()
	for line := range strings.Lines(logs) {
		ok := true
		for _, s := range substrs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return
		}
	}
	t.Errorf("no log line with %q", substrs)
}

// TestCRLSignerFollowsRenewedRoot: the CRL of a standalone issuer's CA
// under an upstream PKI is signed again under the renewed certificate as
// soon as the renewal lands, and the previous certificate's goes.
func TestCRLSignerFollowsRenewedRoot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := captureLogs(t)
		upRoot := testkit.Root(t, "upstream-root", time.Now(), 400*24*time.Hour)
		key := testkit.Key(t, "standalone-ca")
		first := certifyCA(upRoot, key, time.Now())
		td := testkit.New(t, testkit.Options{}).TrustDomain
		local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{
			Root: first, Anchor: upRoot.Certificate, Renewer: &fakeUpstreamCA{upRoot: upRoot, key: key}, TrustDomain: td, Cluster: "east",
			Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		inter, tb, err := local.NewIntermediate(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		db := &memStore{}
		dl := newDenyList(t, db, log)
		iss, err := issuer.New(issuer.Config{
			TrustDomain: td, Cluster: "east", Authority: inter, Bundle: tb.OwnRoots(), Attestor: &fakeAttestor{},
			Recorder: db, DenyList: dl, Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		crls, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{Issuer: iss, DenyList: dl, Store: db, Root: local, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		// Loaded once: a deny-list polling through the 60 days would only
		// cost time here.
		if err := dl.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		runInBackground(t, "CRLSigner.Run", crls.Run)
		runInBackground(t, "LocalRoot.Run", local.Run)
		synctest.Wait()
		signedUnder := func(c *x509.Certificate) bool {
			cur, _ := crls.Current()
			for _, crl := range cur {
				if len(crl.IssuerChain) > 0 && bytes.Equal(crl.IssuerChain[0], c.Raw) {
					return true
				}
			}
			return false
		}
		if !signedUnder(first.Certificate) {
			t.Fatal("no CRL of the CA under its first certificate")
		}
		due := rotation.CADueAt(rotation.Validity{NotBefore: first.Certificate.NotBefore, NotAfter: first.Certificate.NotAfter})
		time.Sleep(time.Until(due) + time.Second)
		synctest.Wait()
		renewed := local.CA().Certificate
		if renewed.Equal(first.Certificate) {
			t.Fatal("not renewed")
		}
		if !signedUnder(renewed) || signedUnder(first.Certificate) {
			t.Error("the CA's CRL does not follow the renewed certificate at once")
		}
	})
}
