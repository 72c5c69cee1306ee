package root

import (
	"context"
	"crypto"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshca/meshca/trust"
)

// sealableKeys wraps Keys so that a test can make every root key
// unavailable, as a sealed Vault does: Load fails, and so does Sign on the
// keys already loaded.
type sealableKeys struct {
	Keys
	sealed atomic.Bool
}

var _ Keys = (*sealableKeys)(nil)

var errSealed = errors.New("vault is sealed")

func (k *sealableKeys) NewKey(ctx context.Context) (string, crypto.Signer, error) {
	ref, s, err := k.Keys.NewKey(ctx)
	if err != nil {
		return "", nil, err
	}
	return ref, &sealableSigner{Signer: s, sealed: &k.sealed}, nil
}

func (k *sealableKeys) Load(ctx context.Context, ref string) (crypto.Signer, error) {
	if k.sealed.Load() {
		return nil, errSealed
	}
	s, err := k.Keys.Load(ctx, ref)
	if err != nil {
		return nil, err
	}
	return &sealableSigner{Signer: s, sealed: &k.sealed}, nil
}

type sealableSigner struct {
	crypto.Signer
	sealed *atomic.Bool
}

func (s *sealableSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if s.sealed.Load() {
		return nil, errSealed
	}
	return s.Signer.Sign(r, digest, opts)
}

func TestBundleNeverReplacedByAnUnsignedOne(t *testing.T) {
	var keys *sealableKeys
	h := newHarness(t, func(c *Config) {
		keys = &sealableKeys{Keys: c.Keys}
		c.Keys = keys
		c.TrustDomains = []string{"east.example"}
	})
	root := h.activeRoot()
	first, _ := h.root.Current()
	wantSignedBy(t, first, root)

	// Nothing changed: the same bundle, not signed again.
	h.clock.Advance(time.Second)
	h.refresh()
	if again, _ := h.root.Current(); again != first {
		t.Fatal("an unchanged bundle was published again")
	}

	// The key is unavailable: the change waits, the signed bundle stays.
	keys.sealed.Store(true)
	h.clock.Advance(time.Second)
	h.addCluster("west", "west.example")
	h.refresh()
	held, _ := h.root.Current()
	if held != first || !held.IsSigned() {
		t.Fatalf("while the key is unavailable the root published bundle %d (signed %v), want %d", held.Sequence, held.IsSigned(), first.Sequence)
	}
	if n := countLines(h.logs.String(), "cannot be signed"); n < 2 {
		t.Errorf("%d warnings about the unsigned change, want one per attempt", n)
	}
	if !strings.Contains(h.logs.String(), "level=WARN") {
		t.Error("not logged as a warning")
	}

	// The key is back: the change is published at the next re-evaluation.
	keys.sealed.Store(false)
	h.clock.Advance(time.Second)
	h.refresh()
	next, _ := h.root.Current()
	if next.Sequence <= first.Sequence || len(next.Domains) != 2 {
		t.Fatalf("after the key came back: bundle %d with %d domains, want a newer one with 2", next.Sequence, len(next.Domains))
	}
	wantSignedBy(t, next, root)
}

func TestFirstBundleUnsignedWhenNoKey(t *testing.T) {
	var keys *sealableKeys
	h := newHarness(t, func(c *Config) {
		keys = &sealableKeys{Keys: c.Keys}
		c.Keys = keys
		c.TrustDomains = []string{"east.example"}
	})
	keys.sealed.Store(true)
	h.clock.Advance(time.Second)
	h.root = h.start() // a restart while the key is unavailable
	b, _ := h.root.Current()
	if b == nil || b.IsSigned() {
		t.Fatal("want an unsigned first bundle while no key can sign")
	}
	if !strings.Contains(h.logs.String(), "unsigned trust bundle") {
		t.Error("the unsigned bundle was not logged")
	}
	keys.sealed.Store(false)
	h.clock.Advance(time.Second)
	h.refresh()
	signed, _ := h.root.Current()
	if signed.Sequence <= b.Sequence || !equalButCRLs(signed, b) {
		t.Fatalf("bundle %d after the key came back, want a newer one with the same content", signed.Sequence)
	}
	wantSignedBy(t, signed, h.activeRoot())
}

// TestBundleSignedByKnownRootWhenActivatedAtOnce: a root that becomes
// active without first being published as prepared is unknown to
// receivers, so the root they know vouches for the bundle that brings it.
func TestBundleSignedByKnownRootWhenActivatedAtOnce(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TrustDomains = []string{"east.example"} })
	old := h.activeRoot()
	h.clock.Advance(time.Second)
	if _, err := h.root.rotate(context.Background(), time.Nanosecond, "admin:test", false); err != nil {
		t.Fatal(err)
	}
	wantStates(t, h, RootRetired, RootActive)
	next := h.activeRoot()
	b, _ := h.root.Current()
	if b.ActiveRoot != trust.Fingerprint(next) {
		t.Fatal("the bundle does not name the new root active")
	}
	wantSignedBy(t, b, old)

	// The next change is signed by the new root, which receivers now know.
	h.addCluster("west", "west.example")
	b2, _ := h.root.Current()
	if b2.Sequence <= b.Sequence {
		t.Fatal("adding a trust domain published nothing")
	}
	wantSignedBy(t, b2, next)
}
