package agent

import (
	"crypto/x509"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/agent/sdstest"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// TestAgentRenewsRevokedCertificate: the issuer relays a CRL that lists
// the agent's own certificate; the agent renews at once (its certificate
// lives an hour, so the regular renewal is half an hour away) and serves
// the new one over SDS, the Workload API and the files, logging the
// revocation once. A CRL revoking another serial changes nothing.
func TestAgentRenewsRevokedCertificate(t *testing.T) {
	now := time.Now()
	tree := testkit.New(t, testkit.Options{Now: now.Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, true)
	root := tree.Root.Certificate
	crl := func(number int64, serials ...*big.Int) trust.CRL {
		c, _, err := tree.Intermediate.SignCRL(ca.CRLRequest{Number: big.NewInt(number), Serials: serials, Now: now, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	bundle := func(crls ...trust.CRL) {
		fi.pushBundle(addCRLs(signedProto(t, trustBundle(10, "cluster.local", []*x509.Certificate{root}, nil), tree.Root), "cluster.local", crls...))
	}
	bundle(crl(1, big.NewInt(42)))

	ra := startAgent(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour)
	e := envoy(t, ra.cfg.SDSSocket, "node")
	def := subscribe(t, e, ResourceDefault)
	first := next(t, def).Chain[0]
	ra.logs.waitFor(t, "trust bundle updated", `"sequence":10`)
	serial := serialOf(first)

	bundle(crl(2, big.NewInt(43)))
	ra.logs.waitFor(t, "trust bundle updated", `"crls_changed":true`)
	if snap, _ := ra.pub.Current(); snap.SVIDVersion() != serial {
		t.Fatalf("serving %s after a CRL of another serial, want %s still", snap.SVIDVersion(), serial)
	}

	bundle(crl(3, big.NewInt(43), first.SerialNumber))
	renewed := nextUntil(t, def, "a certificate other than the revoked one", func(u *sdstest.Update) bool { return !u.Chain[0].Equal(first) }).Chain[0]
	line := ra.logs.waitFor(t, "own certificate revoked; renewing now", `"serial":"`+serial+`"`)
	if !strings.Contains(line, `"level":"WARN"`) {
		t.Errorf("log line %s, want a WARN", line)
	}
	ra.logs.waitFor(t, "certificate obtained", `"serial":"`+serialOf(renewed)+`"`)
	if snap, _ := ra.pub.Current(); snap.SVIDVersion() != serialOf(renewed) {
		t.Errorf("Workload API snapshot serves %s, want the new %s", snap.SVIDVersion(), serialOf(renewed))
	}
	if n := strings.Count(ra.logs.String(), "own certificate revoked"); n != 1 {
		t.Errorf("%d revocation log lines, want 1", n)
	}
}
