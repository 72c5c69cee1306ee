package trust_test

import (
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

func TestBundle(t *testing.T) {
	a := testkit.New(t, testkit.Options{Now: t0})
	b, err := trust.NewBundle(a.Root.Certificate, a.Root.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.Roots()); n != 1 {
		t.Errorf("duplicate root kept: %d roots", n)
	}
	parsed, err := trust.ParseBundle(b.PEM())
	if err != nil {
		t.Fatal(err)
	}
	if !parsed.Roots()[0].Equal(a.Root.Certificate) {
		t.Error("PEM round trip changed the root")
	}
	leaf, _ := a.Intermediate.SignLeaf(ca.LeafRequest{PublicKey: testkit.Key(t, "leaf").Public(), TTL: time.Hour, Now: t0})
	if _, err := trust.NewBundle(leaf); err == nil {
		t.Error("bundle accepted a leaf certificate")
	}
	if _, err := trust.NewBundle(); err == nil {
		t.Error("empty bundle accepted")
	}
	if _, err := trust.ParseBundle([]byte("not pem")); err == nil {
		t.Error("garbage bundle accepted")
	}
}
