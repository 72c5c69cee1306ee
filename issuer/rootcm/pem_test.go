package rootcm_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/rootcm"
	"github.com/meshca/meshca/trust"
)

func TestOwnRootsPEM(t *testing.T) {
	now := time.Now()
	a := testkit.Root(t, "rootcm-a", now, time.Hour).Certificate
	b := testkit.Root(t, "rootcm-b", now, time.Hour).Certificate
	fed := testkit.Root(t, "rootcm-fed", now, time.Hour).Certificate
	own, err := trust.NewBundle(a, b)
	if err != nil {
		t.Fatal(err)
	}
	other, err := trust.NewBundle(fed)
	if err != nil {
		t.Fatal(err)
	}
	tb := &trust.TrustBundle{Domains: []trust.DomainBundle{
		{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Roots: own},
		{TrustDomain: spiffeid.RequireTrustDomainFromString("other.example"), Roots: other, Federated: true},
	}}
	got := rootcm.OwnRootsPEM(tb)
	parsed, err := trust.ParseBundle([]byte(got))
	if err != nil {
		t.Fatal(err)
	}
	roots := parsed.Roots()
	if len(roots) != 2 || !roots[0].Equal(a) || !roots[1].Equal(b) {
		t.Errorf("PEM holds %d roots, want the two own roots in order", len(roots))
	}
	if only := rootcm.OwnRootsPEM(&trust.TrustBundle{Domains: []trust.DomainBundle{
		{TrustDomain: spiffeid.RequireTrustDomainFromString("other.example"), Roots: other, Federated: true},
	}}); only != "" {
		t.Errorf("federated-only bundle gave %q, want nothing", only)
	}
}
