package issuer_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

const (
	apiToken = "api-token"
	apiID    = "spiffe://cluster.local/ns/default/sa/api"
)

// crlRig is an issuer with a deny-list and a CRL signer over a memStore.
// It must be built inside a synctest bubble.
type crlRig struct {
	tree   *testkit.Tree
	db     *memStore
	dl     *issuer.DenyList
	iss    *issuer.Issuer
	signer *issuer.CRLSigner
	logs   *testkit.LogBuffer
}

func newCRLRig(t *testing.T, interTTL time.Duration, pub issuer.CRLPublisher) *crlRig {
	t.Helper()
	log, logs := captureLogs(t)
	g := &crlRig{tree: testkit.New(t, testkit.Options{IntermediateTTL: interTTL}), db: &memStore{}, logs: logs}
	g.dl = newDenyList(t, g.db, log)
	var err error
	g.iss, err = issuer.New(issuer.Config{
		TrustDomain: g.tree.TrustDomain, Cluster: "dev", Authority: g.tree.Intermediate, Bundle: g.tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{
			goodToken: {Namespace: "default", ServiceAccount: "web"},
			apiToken:  {Namespace: "default", ServiceAccount: "api"},
		}},
		Recorder: g.db, DenyList: g.dl, MinTTL: time.Minute, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.signer, err = issuer.NewCRLSigner(issuer.CRLSignerConfig{
		Issuer: g.iss, DenyList: g.dl, Store: g.db, Publisher: pub, Jitter: func() float64 { return 0.5 }, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "DenyList.Run", g.dl.Run)
	runInBackground(t, "CRLSigner.Run", g.signer.Run)
	synctest.Wait()
	return g
}

func (g *crlRig) issue(t *testing.T, token string, ttl time.Duration) *x509.Certificate {
	t.Helper()
	chain, err := g.iss.Issue(context.Background(), issuer.Request{Token: token, CSR: csrPEM(t, testKey(t, "p256"), nil), TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return chain[0]
}

// revoke records a revocation and refreshes the deny-list, as the admin
// service does, and lets the signer react.
func (g *crlRig) revoke(t *testing.T, kind, value string) {
	t.Helper()
	g.db.revoke(kind, value, "dev")
	if err := g.dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
}

// crls verifies every current CRL against the tree's roots at now and
// returns them parsed, in order, with their issuers.
func (g *crlRig) crls(t *testing.T) ([]*x509.RevocationList, []*x509.Certificate) {
	t.Helper()
	crls, _ := g.signer.Current()
	var lists []*x509.RevocationList
	var issuers []*x509.Certificate
	for i, c := range crls {
		rl, iss, err := trust.VerifyCRL(c, g.tree.Bundle, time.Now())
		if err != nil {
			t.Fatalf("CRL %d: %v", i, err)
		}
		lists, issuers = append(lists, rl), append(issuers, iss)
	}
	return lists, issuers
}

func revokedSerials(rl *x509.RevocationList) []string {
	var out []string
	for _, e := range rl.RevokedCertificateEntries {
		out = append(out, trust.SerialHex(e.SerialNumber))
	}
	slices.Sort(out)
	return out
}

func serialsOf(certs ...*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, trust.SerialHex(c.SerialNumber))
	}
	slices.Sort(out)
	return out
}

func TestCRLListsRevokedSerialsAndIdentities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newCRLRig(t, 0, nil)
		lists, issuers := g.crls(t)
		if len(lists) != 1 || !issuers[0].Equal(g.tree.Intermediate.Certificate) || len(lists[0].RevokedCertificateEntries) != 0 {
			t.Fatalf("at start: %d CRLs, want one, empty, by the intermediate", len(lists))
		}
		first := lists[0].Number

		expired := g.issue(t, goodToken, time.Minute)
		time.Sleep(2 * time.Minute)
		web := g.issue(t, goodToken, 0)
		api := g.issue(t, apiToken, 0)
		other := g.issue(t, apiToken, 0)
		_, changed := g.signer.Current()
		g.revoke(t, store.RevokeSPIFFEID, webID)
		g.revoke(t, store.RevokeSerial, trust.SerialHex(api.SerialNumber))
		select {
		case <-changed:
		default:
			t.Fatal("the change channel was not closed")
		}
		lists, _ = g.crls(t)
		if got, want := revokedSerials(lists[0]), serialsOf(web, api); !slices.Equal(got, want) {
			t.Errorf("CRL lists %v, want %v (not the expired %s nor the unrevoked %s)", got, want,
				trust.SerialHex(expired.SerialNumber), trust.SerialHex(other.SerialNumber))
		}
		if lists[0].Number.Cmp(first) <= 0 {
			t.Errorf("CRL number %v after a change, want more than %v", lists[0].Number, first)
		}
		if v := lists[0].NextUpdate.Sub(lists[0].ThisUpdate); v < ca.DefaultCRLValidity || v > ca.DefaultCRLValidity+time.Minute {
			t.Errorf("CRL validity %v, want about %v", v, ca.DefaultCRLValidity)
		}

		// At half-life it is signed again, without the certificates that
		// have expired meanwhile.
		signed := lists[0]
		time.Sleep(ca.DefaultCRLValidity/2 + time.Second)
		synctest.Wait()
		lists, _ = g.crls(t)
		if lists[0].Number.Cmp(signed.Number) <= 0 || !lists[0].ThisUpdate.After(signed.ThisUpdate) {
			t.Errorf("not re-signed at half-life: number %v, was %v", lists[0].Number, signed.Number)
		}
		if got, want := revokedSerials(lists[0]), serialsOf(api); !slices.Equal(got, want) {
			t.Errorf("CRL lists %v at half-life, want %v (the revoked identity's certificate expired)", got, want)
		}
	})
}

func TestCRLSignedByEveryHeldIntermediate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newCRLRig(t, 48*time.Hour, nil)
		first := g.tree.Intermediate
		old := g.issue(t, goodToken, 0)
		time.Sleep(time.Hour)
		key := newKey(t)
		cert, err := g.tree.Root.SignIntermediate(ca.IntermediateRequest{
			PublicKey: key.Public(), TrustDomain: g.tree.TrustDomain, Cluster: "dev", TTL: 48 * time.Hour, Now: time.Now(),
		})
		if err != nil {
			t.Fatal(err)
		}
		second, err := ca.NewAuthority(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := g.signer.Current()
		if err := g.iss.SetAuthority(second, g.tree.Bundle); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if held := g.iss.Held(time.Now()); len(held) != 2 || held[0] != second || held[1] != first {
			t.Fatalf("issuer holds %d authorities, want the new one, then the previous", len(held))
		}
		lists, issuers := g.crls(t)
		if len(lists) != 2 || !issuers[0].Equal(second.Certificate) || !issuers[1].Equal(first.Certificate) {
			t.Fatalf("%d CRLs after rotation, want the new intermediate's, then the previous one's", len(lists))
		}
		if after, _ := g.signer.Current(); !bytes.Equal(after[1].DER, before[0].DER) {
			t.Error("the previous intermediate's CRL was re-signed without a change")
		}

		g.revoke(t, store.RevokeSPIFFEID, webID)
		lists, _ = g.crls(t)
		for i, rl := range lists {
			if got, want := revokedSerials(rl), serialsOf(old); !slices.Equal(got, want) {
				t.Errorf("CRL %d lists %v, want the certificate issued under the previous intermediate %v", i, got, want)
			}
		}

		sleepUntil(first.Certificate.NotAfter.Add(time.Second))
		lists, issuers = g.crls(t)
		if len(lists) != 1 || !issuers[0].Equal(second.Certificate) {
			t.Errorf("%d CRLs once the previous intermediate expired, want only the current one's", len(lists))
		}
		if held := g.iss.Held(time.Now()); len(held) != 1 {
			t.Errorf("issuer still holds %d authorities", len(held))
		}
	})
}

func TestCRLKeepsCurrentWhileStoreFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newCRLRig(t, 0, nil)
		web := g.issue(t, goodToken, 0)
		before, _ := g.signer.Current()
		g.db.setFail(false, true)
		g.revoke(t, store.RevokeSPIFFEID, webID)
		if now, _ := g.signer.Current(); len(now) != 1 || !bytes.Equal(now[0].DER, before[0].DER) {
			t.Fatal("the CRL changed while the certificates could not be listed")
		}
		if !strings.Contains(g.logs.String(), "signing CRLs failed; keeping the current ones") {
			t.Error("the failure is not logged")
		}
		g.db.setFail(false, false)
		time.Sleep(time.Second) // the first retry
		synctest.Wait()
		lists, _ := g.crls(t)
		if got, want := revokedSerials(lists[0]), serialsOf(web); !slices.Equal(got, want) {
			t.Errorf("after the store came back the CRL lists %v, want %v", got, want)
		}
	})
}

// fakePublisher records what it is handed; it fails the first failures
// calls.
type fakePublisher struct {
	mu       sync.Mutex
	failures int
	calls    []time.Time
	got      [][]trust.CRL
}

var _ issuer.CRLPublisher = (*fakePublisher)(nil)

func (p *fakePublisher) PublishCRLs(_ context.Context, crls []trust.CRL) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, time.Now())
	if len(p.calls) <= p.failures {
		return errors.New("root unreachable")
	}
	p.got = append(p.got, crls)
	return nil
}

func (p *fakePublisher) published() ([]time.Time, [][]trust.CRL) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls), slices.Clone(p.got)
}

func TestCRLPublishedToTheRootOnChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &fakePublisher{failures: 2}
		start := time.Now()
		g := newCRLRig(t, 0, pub)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		calls, got := pub.published()
		if want := []time.Time{start, start.Add(time.Second), start.Add(3 * time.Second)}; !slices.Equal(calls, want) {
			t.Fatalf("publications at %v, want %v: at once, then retried with backoff", calls, want)
		}
		current, _ := g.signer.Current()
		if len(got) != 1 || !slices.EqualFunc(got[0], current, crlEqual) {
			t.Fatal("the root did not get the current CRLs")
		}

		g.issue(t, goodToken, 0)
		g.revoke(t, store.RevokeSPIFFEID, webID)
		calls, got = pub.published()
		current, _ = g.signer.Current()
		if len(calls) != 4 || !calls[3].Equal(time.Now()) || !slices.EqualFunc(got[1], current, crlEqual) {
			t.Fatalf("%d publications, want a fourth at once with the new CRLs", len(calls))
		}
		if !strings.Contains(g.logs.String(), "publishing CRLs to the root failed") {
			t.Error("publication failures are not logged")
		}
		// Issuance never waits for the root.
		pub.mu.Lock()
		pub.failures = 1 << 30
		pub.mu.Unlock()
		g.issue(t, apiToken, 0)
	})
}

func crlEqual(a, b trust.CRL) bool {
	return bytes.Equal(a.DER, b.DER) && slices.EqualFunc(a.IssuerChain, b.IssuerChain, bytes.Equal)
}

func TestCRLNumbersGrowWithinOneMillisecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newCRLRig(t, 0, nil)
		var numbers []*big.Int
		for _, id := range []string{webID, apiID} {
			g.revoke(t, store.RevokeSPIFFEID, id) // fake time stands still
			lists, _ := g.crls(t)
			numbers = append(numbers, lists[0].Number)
		}
		if numbers[1].Cmp(numbers[0]) <= 0 {
			t.Errorf("CRL numbers %v then %v at the same instant, want growing", numbers[0], numbers[1])
		}
	})
}

// A prepared intermediate signs its CRL before it signs any certificate, so
// relying parties have it by the time they meet a chain through it.
func TestCRLSignedByPreparedIntermediate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newCRLRig(t, 48*time.Hour, nil)
		current := g.tree.Intermediate
		key := newKey(t)
		cert, err := g.tree.Root.SignIntermediate(ca.IntermediateRequest{
			PublicKey: key.Public(), TrustDomain: g.tree.TrustDomain, Cluster: "dev", TTL: 48 * time.Hour, Now: time.Now(),
		})
		if err != nil {
			t.Fatal(err)
		}
		prepared, err := ca.NewAuthority(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		g.iss.SetPrepared(prepared)
		synctest.Wait()
		if g.iss.Authority() != current {
			t.Fatal("SetPrepared switched the signing intermediate")
		}
		if held := g.iss.Held(time.Now()); len(held) != 2 || held[0] != current || held[1] != prepared {
			t.Fatalf("issuer holds %d authorities, want the current one, then the prepared one", len(held))
		}
		_, issuers := g.crls(t)
		if len(issuers) != 2 || !issuers[1].Equal(prepared.Certificate) {
			t.Fatalf("%d CRLs, want the current and the prepared intermediate's", len(issuers))
		}
		if leaf := g.issue(t, goodToken, 0); leaf.CheckSignatureFrom(current.Certificate) != nil {
			t.Error("a certificate was signed by the prepared intermediate before it was activated")
		}
	})
}

// An issuer with its own local root has the root sign a CRL too, so that a
// relying party wanting one for every CA of a chain finds it.
func TestCRLSignedByLocalRoot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newCRLRig(t, 48*time.Hour, nil)
		signer, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{
			Issuer: g.iss, DenyList: g.dl, Store: g.db, Root: issuer.FixedCA(g.tree.Root), Jitter: func() float64 { return 0.5 },
		})
		if err != nil {
			t.Fatal(err)
		}
		runInBackground(t, "CRLSigner.Run (with root)", signer.Run)
		synctest.Wait()
		crls, _ := signer.Current()
		var fromRoot int
		for i, c := range crls {
			_, iss, err := trust.VerifyCRL(c, g.tree.Bundle, time.Now())
			if err != nil {
				t.Fatalf("CRL %d: %v", i, err)
			}
			if iss.Equal(g.tree.Root.Certificate) {
				fromRoot++
			}
		}
		if len(crls) != 2 || fromRoot != 1 {
			t.Fatalf("%d CRLs, %d from the root; want the intermediate's and the root's", len(crls), fromRoot)
		}
	})
}

// Once the intermediate has expired without a successor, the signer waits
// for a change or its next re-signing instead of waking again at once,
// forever (which spun a core and never let time move on). The test hangs
// if it spins: the bubble's clock never reaches the end of the sleep.
func TestCRLSignerIdleAfterIntermediateExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newCRLRig(t, time.Hour, nil)
		time.Sleep(time.Until(g.tree.Intermediate.Certificate.NotAfter) + time.Hour)
		synctest.Wait()
		if n := strings.Count(g.logs.String(), "CRL signed"); n > 2 {
			t.Errorf("%d CRLs signed in the two hours of a one-hour intermediate, want at most 2", n)
		}
	})
}
