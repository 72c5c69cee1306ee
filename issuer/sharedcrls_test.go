package issuer_test

import (
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// crlReplica is one standalone issuer replica: its own intermediate from the
// shared local root, over the shared store, with its CRLs and JWT-SVID keys
// shared through the store.
type crlReplica struct {
	iss    *issuer.Issuer
	dl     *issuer.DenyList
	shared *issuer.SharedCRLs
	jwt    *issuer.JWTKeys
	jwts   *issuer.SharedJWTs
	inter  *ca.Authority
}

func newCRLReplica(t *testing.T, local *issuer.LocalRoot, db *sqlite.Store, root *ca.Authority, log *slog.Logger) *crlReplica {
	t.Helper()
	inter, tb, err := local.NewIntermediate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dl, err := issuer.NewDenyList(issuer.DenyListConfig{Store: db, Cluster: "dev", PollInterval: 50 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tb.Domains[0].TrustDomain, Cluster: "dev", Authority: inter, Bundle: tb.OwnRoots(),
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{goodToken: {Namespace: "default", ServiceAccount: "web"}, watchToken: watcher}},
		Recorder: db, DenyList: dl, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{Issuer: iss, DenyList: dl, Store: db, Root: issuer.FixedCA(root), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := issuer.NewSharedCRLs(issuer.SharedCRLsConfig{
		Own: signer, Store: db, Root: issuer.FixedCA(root), Cluster: "dev", PollInterval: 50 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := issuer.NewJWTKeys(issuer.JWTConfig{Issuer: iss, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	jwts, err := issuer.NewSharedJWTs(issuer.SharedJWTsConfig{
		Own: keys, Store: db, Root: issuer.FixedCA(root), TrustDomain: tb.Domains[0].TrustDomain, Cluster: "dev",
		PollInterval: 50 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "DenyList.Run", dl.Run)
	runInBackground(t, "CRLSigner.Run", signer.Run)
	runInBackground(t, "SharedCRLs.Run", shared.Run)
	runInBackground(t, "JWTKeys.Run", keys.Run)
	runInBackground(t, "SharedJWTs.Run", jwts.Run)
	return &crlReplica{iss: iss, dl: dl, shared: shared, jwt: keys, jwts: jwts, inter: inter}
}

// twoReplicas starts two replicas of a standalone issuer on one SQLite store
// and one local root, logging to logs.
func twoReplicas(t *testing.T) (*testkit.Tree, *sqlite.Store, *testkit.LogBuffer, *crlReplica, *crlReplica) {
	t.Helper()
	tree := testkit.New(t, testkit.Options{})
	log, logs := captureLogs(t)
	db, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "meshca.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	local, err := issuer.NewLocalRoot(issuer.LocalRootConfig{Root: tree.Root, TrustDomain: tree.TrustDomain, Cluster: "dev", ServingNames: devHosts})
	if err != nil {
		t.Fatal(err)
	}
	return tree, db, logs, newCRLReplica(t, local, db, tree.Root, log), newCRLReplica(t, local, db, tree.Root, log)
}

// Two replicas of a standalone issuer share one store and one local root,
// each signing with its own intermediate: crlReplica A's served bundle
// carries the CRL of B's intermediate, listing a certificate B signed once
// it is revoked; a stored CRL that no intermediate of the root signed is
// never served.
func TestStandaloneReplicasServeEachOthersCRLs(t *testing.T) {
	tree, db, logs, a, b := twoReplicas(t)
	agent := bundleClient(t, serveIssuerConfig(t, issuer.ServerConfig{Issuer: a.iss, CRLs: a.shared}), tree.Bundle.Pool())
	next := watchBundles(t, agent, 0)

	chain, err := b.iss.Issue(t.Context(), issuer.Request{Token: goodToken, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatal(err)
	}
	serial := trust.SerialHex(chain[0].SerialNumber)
	if _, err := db.Revoke(t.Context(), store.Revocation{Kind: store.RevokeSerial, Value: serial, Cluster: "dev", RevokedBy: "test", RevokedAt: time.Now()},
		store.AuditEvent{Time: time.Now(), Actor: "test", Action: "revocation.add", Cluster: "dev", Serial: serial}); err != nil {
		t.Fatal(err)
	}
	// Only B's deny-list learns of it here: A's own CRL may lag, B's must
	// reach A's bundle through the store.
	start := time.Now()
	got := nextUntil(t, next, "A's bundle with B's CRL listing the revoked serial", func(tb *trust.TrustBundle) error {
		c, ok := crlOf(tb, tree.TrustDomain, b.inter.Certificate)
		if !ok {
			return fmt.Errorf("bundle %d without B's CRL", tb.Sequence)
		}
		if rl := verifiedCRL(t, c, tree.Bundle); !slices.Equal(revokedSerials(rl), serialsOf(chain[0])) {
			return fmt.Errorf("B's CRL lists %v", revokedSerials(rl))
		}
		return nil
	})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("B's CRL reached A's bundle after %s", d)
	}
	if _, ok := crlOf(got, tree.TrustDomain, a.inter.Certificate); !ok {
		t.Error("A's bundle lost A's own CRL")
	}

	// A CRL signed by an intermediate of another root, stored as if a
	// crlReplica had, is not served.
	other := testkit.New(t, testkit.Options{RootKey: "other-root", Cluster: "dev"})
	forged, _, err := other.Intermediate.SignCRL(ca.CRLRequest{Number: big.NewInt(time.Now().UnixMilli()), Serials: []*big.Int{big.NewInt(7)}, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutIssuerCRL(t.Context(), store.IssuerCRL{
		IssuerSerial: trust.SerialHex(other.Intermediate.Certificate.SerialNumber), Cluster: "dev", Number: time.Now().UnixMilli(),
		DER: forged.DER, IssuerChain: forged.IssuerChain, IssuerNotAfter: other.Intermediate.Certificate.NotAfter.UTC().Truncate(time.Second),
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "A refuses the forged CRL", func() error {
		if !strings.Contains(logs.String(), "not serving a stored CRL") {
			return errNotYet
		}
		return nil
	})
	for _, r := range []*crlReplica{a, b} {
		crls, _ := r.shared.Current()
		for _, crl := range crls {
			if _, _, err := trust.VerifyCRL(crl, tree.Bundle, time.Now()); err != nil {
				t.Errorf("a served CRL does not verify under the local root: %v", err)
			}
		}
	}
}
