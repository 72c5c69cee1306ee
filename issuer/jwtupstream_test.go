package issuer_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/root/roottest"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// TestUpstreamPublishesJWTAuthorities hands a JWT authority made under the
// intermediate the real root signed to that root, with the issuer
// credential, as JWTKeys does with a central root.
func TestUpstreamPublishesJWTAuthorities(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), tok, nil))
	if err := up.PublishJWTAuthorities(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Errorf("PublishJWTAuthorities before enrolment: %v, want an error", err)
	}
	a, tb := mustIntermediate(t, up)
	key := newKey(t)
	now := r.Clock.Now()
	cert, err := a.SignJWTSigner(ca.JWTSignerRequest{PublicKey: &key.PublicKey, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := trust.JWTKeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	auth := trust.JWTAuthority{KeyID: kid, PublicKey: &key.PublicKey, ExpiresAt: cert.NotAfter, Chain: [][]byte{cert.Raw, a.Certificate.Raw}}
	if err := trust.VerifyJWTAuthority(auth, up.TrustDomain(), tb.OwnRoots(), now); err != nil {
		t.Fatalf("the authority does not verify against the root's bundle: %v", err)
	}
	if err := up.PublishJWTAuthorities(t.Context(), []trust.JWTAuthority{auth}); err != nil {
		t.Fatalf("the root refused the issuer's JWT authority: %v", err)
	}

	// The issuer adds its keys to the root's signed bundle it relays; the
	// root's signature still verifies, as Digest leaves an own domain's
	// JWT authorities out.
	iss, err := issuer.New(issuer.Config{
		TrustDomain: up.TrustDomain(), Cluster: "east", Authority: a, Bundle: tb.OwnRoots(),
		Attestor: &fakeAttestor{}, Recorder: &fakeRecorder{}, Now: r.Clock.Now, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := issuer.NewJWTKeys(issuer.JWTConfig{Issuer: iss})
	if err != nil {
		t.Fatal(err)
	}
	served := issuer.ServedBundle(fixedBundle{tb}, keys, up.TrustDomain())
	own, _ := keys.Current()
	if d, ok := served.Domain(up.TrustDomain()); !ok || len(own) != 1 || len(d.JWTAuthorities) != 1 || d.JWTAuthorities[0].KeyID != own[0].KeyID {
		t.Fatalf("the relayed bundle does not carry the issuer's JWT key")
	}
	if served.Sequence != tb.Sequence || !served.IsSigned() {
		t.Fatal("the relayed bundle lost the root's sequence or signature")
	}
	if err := served.VerifySignature(r.Roots(), now); err != nil {
		t.Errorf("the root's signature no longer verifies once the issuer's JWT keys are added: %v", err)
	}

	bad := auth
	bad.PublicKey = "not a key"
	if err := up.PublishJWTAuthorities(t.Context(), []trust.JWTAuthority{bad}); err == nil {
		t.Error("an authority that cannot be encoded was sent")
	}
}

// fixedBundle is a BundleSource of one bundle.
type fixedBundle struct{ tb *trust.TrustBundle }

func (f fixedBundle) Current() (*trust.TrustBundle, <-chan struct{}) { return f.tb, nil }
