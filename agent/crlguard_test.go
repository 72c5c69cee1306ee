package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshca/meshca/agent/sdstest"
	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// rejectedBundles returns the value of bundleRejectedMetricName for reason.
func rejectedBundles(t testing.TB, g prometheus.Gatherer, reason string) float64 {
	t.Helper()
	return counterByReason(t, g, bundleRejectedMetricName, reason)
}

// TestAgentRefusesCRLRollback plays an issuer that relays the root's
// signed bundle (same sequence every time, as CRLs are outside the
// signature) with the root's CRL numbered 200, then numbered 100
// (revocations undone), then without it (stripped), then another CRL
// numbered 200: each of those three is refused whole, logged and counted,
// and SDS and the Workload API keep CRL 200 until CRL 300 arrives.
func TestAgentRefusesCRLRollback(t *testing.T) {
	now := time.Now()
	tree := testkit.New(t, testkit.Options{Now: now.Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, true)
	root := tree.Root.Certificate
	bundle := func(crls ...trust.CRL) *meshcav1.Bundle {
		return addCRLs(signedProto(t, trustBundle(10, "cluster.local", []*x509.Certificate{root}, nil), tree.Root), "cluster.local", crls...)
	}
	crl200 := signCRL(t, tree.Root, 200, now, time.Hour, 7, 8)
	fi.pushBundle(bundle(crl200))

	reg := prometheus.NewRegistry()
	ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) { c.Registerer = reg })
	e := envoy(t, ra.cfg.SDSSocket, "node")
	rootCA := subscribe(t, e, ResourceRootCA)
	nextUntil(t, rootCA, "CRL 200", func(u *sdstest.Update) bool { return sameDERs(servedCRLs(u), crl200) })

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+ra.cfg.WorkloadSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bundles, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509Bundles(withHeader(ctx), &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvUntil(t, bundles.Recv, "CRL 200", func(r *workload.X509BundlesResponse) bool { return sameDERs(r.GetCrl(), crl200) })

	for _, tc := range []struct {
		reason string
		crls   []trust.CRL
	}{
		{bundleCRLRollback, []trust.CRL{signCRL(t, tree.Root, 100, now, time.Hour)}},
		{bundleCRLDropped, nil},
		{bundleCRLConflict, []trust.CRL{signCRL(t, tree.Root, 200, now, time.Hour, 7)}},
	} {
		fi.pushBundle(bundle(tc.crls...))
		ra.logs.waitFor(t, "trust bundle rejected", `"reason":"`+tc.reason+`"`, `"level":"WARN"`, `"sequence":10`)
		if n := rejectedBundles(t, reg, tc.reason); n != 1 {
			t.Errorf("%s{reason=%q} = %v, want 1", bundleRejectedMetricName, tc.reason, n)
		}
		if snap, _ := ra.pub.Current(); !sameDERs(snap.CRLs(), crl200) {
			t.Errorf("after the %s bundle the agent serves %d CRLs, want CRL 200", tc.reason, len(snap.CRLs()))
		}
	}

	// The next update either stream sees is CRL 300: nothing of the
	// refused bundles was ever served.
	crl300 := signCRL(t, tree.Root, 300, now, time.Hour, 7, 8, 9)
	fi.pushBundle(bundle(crl300))
	if u := next(t, rootCA); !sameDERs(servedCRLs(u), crl300) {
		t.Errorf("SDS ROOTCA after CRL 200: %d CRLs, want CRL 300", len(u.CRLs))
	}
	r, err := bundles.Recv()
	if err != nil || !sameDERs(r.GetCrl(), crl300) {
		t.Errorf("Workload API after CRL 200: %v, %d CRLs, want CRL 300", err, len(r.GetCrl()))
	}
	if err := ra.ready(); err != nil {
		t.Errorf("not ready: %v", err)
	}
}

// TestManagerCRLCurrent pins down when a CRL may leave the bundle: when it
// is about to expire, when its root leaves the bundle, or when its intermediate is
// revoked; not while its issuer is still trusted.
func TestManagerCRLCurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		t.Cleanup(f.mgr.Stop)
		td := webID.TrustDomain()
		now := time.Now()
		bundle := func(roots *trust.Bundle, crls ...trust.CRL) *trust.TrustBundle {
			return signedBy(t, &trust.TrustBundle{Sequence: 5, Domains: []trust.DomainBundle{{TrustDomain: td, Roots: roots, CRLs: crls}}}, f.tree.Root)
		}
		inter := signCRL(t, f.tree.Intermediate, 1, now, 2*time.Hour)
		root1 := signCRL(t, f.tree.Root, 1, now, time.Hour)
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle, inter, root1)); err != nil {
			t.Fatal(err)
		}
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle, root1)); !errors.Is(err, errCRLDropped) {
			t.Errorf("the intermediate's CRL left out while it is trusted: %v, want ErrCRLDropped", err)
		}
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle, inter)); !errors.Is(err, errCRLDropped) {
			t.Errorf("the root's CRL left out: %v, want ErrCRLDropped", err)
		}
		// The root CRL revokes the intermediate: its CRL may go.
		root2, _, err := f.tree.Root.SignCRL(ca.CRLRequest{Number: big.NewInt(2), Now: now, Validity: time.Hour,
			Serials: []*big.Int{f.tree.Intermediate.Certificate.SerialNumber}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle, root2)); err != nil {
			t.Errorf("the revoked intermediate's CRL left out: %v, want it accepted", err)
		}
		if snap := f.current(); !sameDERs(snap.CRLs(), root2) {
			t.Errorf("served %d CRLs, want the root's second", len(snap.CRLs()))
		}
		// The root CRL may go once it is about to expire (the root's clock
		// may run ahead), not before.
		time.Sleep(time.Hour - crlDropGrace - time.Minute)
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle)); !errors.Is(err, errCRLDropped) {
			t.Errorf("the root CRL left out 6 minutes before it expires: %v, want ErrCRLDropped", err)
		}
		time.Sleep(time.Minute + time.Second)
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle)); err != nil {
			t.Errorf("the root CRL left out 5 minutes before it expires: %v, want it accepted", err)
		}
		// A CRL numbered like one accepted before it expired is a rollback.
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle, signCRL(t, f.tree.Root, 1, time.Now(), time.Hour))); !errors.Is(err, errCRLRollback) {
			t.Errorf("root CRL 1 after 2: %v, want ErrCRLRollback", err)
		}
		// A root that leaves the bundle takes its CRL along.
		root3 := signCRL(t, f.tree.Root, 3, time.Now(), time.Hour)
		if _, err := f.mgr.SetTrustBundle(bundle(f.tree.Bundle, root3)); err != nil {
			t.Fatal(err)
		}
		other, _ := otherRoot(t, f.tree)
		withOther := mustBundle(t, other.Roots()[1])
		if _, err := f.mgr.SetTrustBundle(bundle(withOther)); err != nil {
			t.Errorf("the CRL of a root that left: %v, want it accepted", err)
		}
	})
}
