package issuer

import (
	"bytes"
	"math/big"
	"testing"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

func TestMergeCRLs(t *testing.T) {
	a := testkit.New(t, testkit.Options{})
	b := testkit.New(t, testkit.Options{RootKey: "other root", TrustDomain: "other.example"})
	sign := func(auth *ca.Authority, n int64) trust.CRL {
		t.Helper()
		c, _, err := auth.SignCRL(ca.CRLRequest{Number: big.NewInt(n)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	interOld, interNew, interTie := sign(a.Intermediate, 1), sign(a.Intermediate, 5), sign(a.Intermediate, 5)
	rootA, rootANew, rootB := sign(a.Root, 3), sign(a.Root, 4), sign(b.Root, 2)
	garbage := trust.CRL{DER: []byte("not a CRL")}
	for _, tc := range []struct {
		name  string
		lists [][]trust.CRL
		want  []trust.CRL
	}{
		{"own replaces an older copy in place", [][]trust.CRL{{rootA, interOld}, {interNew}}, []trust.CRL{rootA, interNew}},
		{"an older own CRL does not replace the root's newer copy", [][]trust.CRL{{interNew}, {interOld}}, []trust.CRL{interNew}},
		{"a tie keeps the first", [][]trust.CRL{{interNew}, {interTie}}, []trust.CRL{interNew}},
		{"roots are told apart by issuer", [][]trust.CRL{{rootA, rootB}, {rootANew}}, []trust.CRL{rootANew, rootB}},
		{"unparsable CRLs pass through", [][]trust.CRL{{garbage, garbage}, {interNew}}, []trust.CRL{garbage, garbage, interNew}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeCRLs(tc.lists...)
			if len(got) != len(tc.want) {
				t.Fatalf("%d CRLs, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i].DER, tc.want[i].DER) {
					t.Errorf("CRL %d is not the expected one", i)
				}
			}
		})
	}
}

func TestShouldSend(t *testing.T) {
	a := testkit.New(t, testkit.Options{})
	crl, _, err := a.Intermediate.SignCRL(ca.CRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bare := &trust.TrustBundle{Sequence: 10, Domains: []trust.DomainBundle{{TrustDomain: a.TrustDomain, Roots: a.Bundle}}}
	withCRL := withCRLs(bare, a.TrustDomain, []trust.CRL{crl})
	newer := &trust.TrustBundle{Sequence: 11, Domains: bare.Domains}
	for _, tc := range []struct {
		name string
		tb   *trust.TrustBundle
		last uint64
		sent *trust.TrustBundle
		want bool
	}{
		{"first, unknown to the caller", bare, 0, nil, true},
		{"first, the caller holds it", bare, 10, nil, false},
		{"first, the caller holds the sequence, CRLs may differ", withCRL, 10, nil, true},
		{"first, the caller holds a newer one", bare, 12, nil, true},
		{"newer", newer, 10, bare, true},
		{"same sequence, new CRLs", withCRL, 10, bare, true},
		{"same sequence, same content", withCRLs(bare, a.TrustDomain, []trust.CRL{crl}), 10, withCRL, false},
		{"same pointer", withCRL, 10, withCRL, false},
		{"older", bare, 11, newer, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shouldSend(tc.tb, tc.last, tc.sent); got != tc.want {
				t.Errorf("shouldSend = %v, want %v", got, tc.want)
			}
		})
	}
	if withCRL == bare || len(bare.Domains[0].CRLs) != 0 {
		t.Error("withCRLs modified the bundle it was given")
	}
}
