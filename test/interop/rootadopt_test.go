package interop

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPilotAgentsMigrateToNewRoot is migration path (c): from istiod's CA to
// a new meshca root by rotation, both roots trusted meanwhile. `meshca root
// serve` adopts istiod's self-signed root (istio-ca-secret, made by Istio's
// own code: newIstiodRoot) as its first root (adoptRoot); an issuer under it
// serves one pilot-agent, while another pilot-agent keeps the certificate
// of an istiod-style CA signing directly with that root. Then `meshca admin
// root rotate` creates a meshca root, cross-signed with istiod's: through
// prepared → active → retiring, at every observation each workload's ROOTCA
// verifies the other's default chain and mutual TLS succeeds both ways,
// including the istiod-held workload (ROOTCA: istiod's root alone, for
// ever) against a meshca certificate under the new root. After the
// istiod-held workload is gone (istiod's CA turned off), the old root
// retires and the meshca workload's ROOTCA ends up holding the new root
// alone.
func TestPilotAgentsMigrateToNewRoot(t *testing.T) {
	agentBin := pilotAgentBinary(t)
	bin := meshcaBinary(t)
	istiod := newIstiodRoot(t)
	secretDir := t.TempDir() // istio-ca-secret, mounted read-only
	writeFile(t, filepath.Join(secretDir, "ca-cert.pem"), istiod.certPEM, 0o400)
	writeFile(t, filepath.Join(secretDir, "ca-key.pem"), istiod.keyPEM, 0o400)
	root := startRootServerWith(t, bin, fmt.Sprintf("adoptRoot: {certFile: %[1]s/ca-cert.pem, keyFile: %[1]s/ca-key.pem}\n", secretDir))
	if roots, _ := readBundle(root.bundlePath()); len(roots) != 1 || !roots[0].Equal(istiod.cert) {
		t.Fatalf("the root's bundle.pem holds %s, want istiod's root alone", subjects(roots))
	}
	oldRoot := fingerprintOf(istiod.cert)
	if listed := root.roots(t); len(listed) != 1 || listed[0].SHA256 != oldRoot || listed[0].State != "active" {
		t.Fatalf("root lists %+v, want istiod's root (%s) active", listed, oldRoot)
	}
	is := startIssuerServer(t, bin, root, "east")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	legacyID := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, namespace, legacyAcct)
	istiodRootPath := filepath.Join(t.TempDir(), "root-cert.pem")
	writeFile(t, istiodRootPath, istiod.certPEM, 0o644)
	legacyPA := startPilotAgentFor(t, agentBin, pilotAgentSpec{caPort: serveIstiodCA(t, istiod, legacyID), bundlePath: istiodRootPath,
		token: "istiod-token", serviceAccount: legacyAcct})
	token := mintToken(t, bin, is.dir, namespace, serviceAcct, istioAudience)
	meshcaPA := startPilotAgentFor(t, agentBin, pilotAgentSpec{caPort: is.port, bundlePath: root.bundlePath(), token: token,
		serviceAccount: serviceAcct, env: []string{"SECRET_TTL=" + clientLeafTTL.String()}})
	legacy, migrated := watchWorkload(t, ctx, "istiod-held", legacyPA), watchWorkload(t, ctx, "meshca", meshcaPA)
	obs := &rotationObserver{a: legacy, b: migrated}
	run := &rotationRun{t: t, obs: obs, bundlePath: root.bundlePath(), agents: []*pilotAgent{legacyPA, meshcaPA},
		procs: []*proc{root.proc, is.proc, legacyPA.proc, meshcaPA.proc}, logs: []*proc{is.proc, root.proc}}
	chainRoot := func(v *workloadView) string {
		s, _ := v.snapshot()
		if s.chain == nil {
			return ""
		}
		return leafRoot(s.chain)
	}
	rootsOf := func(v *workloadView) []string {
		s, _ := v.snapshot()
		return fingerprints(s.roots)
	}
	state := func(fp string) string {
		for _, r := range root.roots(t) {
			if r.SHA256 == fp {
				return r.State
			}
		}
		return "gone"
	}

	run.until("both workloads have default and ROOTCA", startTimeout, func() bool { return obs.observations > 0 })
	if got := chainRoot(migrated); got != oldRoot {
		t.Fatalf("the meshca workload's intermediate chains to %s, want istiod's root %s", got, oldRoot)
	}
	root.admin(t, nil, "root", "rotate")
	var newRoot string
	for _, r := range root.roots(t) {
		if r.SHA256 != oldRoot {
			newRoot = r.SHA256
		}
	}
	run.until("the new root active, istiod's retiring", rotationPropagation+time.Minute, func() bool {
		return state(newRoot) == "active" && state(oldRoot) == "retiring"
	})
	run.until("the meshca workload's certificate under the new root", 2*time.Minute, func() bool { return chainRoot(migrated) == newRoot })
	both := []string{oldRoot, newRoot}
	slices.Sort(both)
	run.until("the meshca workload's ROOTCA holding both roots", time.Minute, func() bool { return slices.Equal(rootsOf(migrated), both) })
	end := time.Now().Add(3 * clientLeafTTL)
	run.until("a few renewals under the new root", time.Minute, func() bool { return time.Now().After(end) })
	if got := rootsOf(legacy); !slices.Equal(got, []string{oldRoot}) {
		t.Errorf("the istiod-held workload's ROOTCA is %v, want istiod's root alone", got)
	}
	t.Logf("cutover with both workloads: %d observations, %d failures, %d verifications through a cross certificate (a single-anchor ROOTCA: %v); meshca workload renewed %d times",
		obs.observations, obs.fails, obs.crossed, obs.sawSingleAnchorCross, migrated.renewals())
	if obs.fails != 0 {
		t.Fatalf("%d checks failed in %d observations (four checks each); first:\n%s", obs.fails, obs.observations, strings.Join(obs.firstErrs, "\n"))
	}
	if !obs.sawSingleAnchorCross {
		t.Error("the istiod-held workload (ROOTCA: istiod's root alone) never verified a meshca certificate under the new root")
	}

	// istiod's CA off: the istiod-held workload is gone (restarted onto
	// meshca). Nothing meshca signed under istiod's root outlives its last
	// intermediate, so the root retires and leaves the bundle.
	legacyPA.stopClean(t)
	run.agents, run.procs = []*pilotAgent{meshcaPA}, []*proc{root.proc, is.proc, meshcaPA.proc}
	single := &rotationObserver{a: migrated, b: migrated}
	run.obs = single
	run.until("istiod's root gone", 3*rotationInterTTL, func() bool { return state(oldRoot) == "gone" })
	run.until("the meshca workload's ROOTCA holding the new root alone", 2*time.Minute, func() bool {
		return slices.Equal(rootsOf(migrated), []string{newRoot})
	})
	if single.fails != 0 {
		t.Fatalf("after the cutover %d checks failed in %d observations; first:\n%s", single.fails, single.observations, strings.Join(single.firstErrs, "\n"))
	}
	cancel()
	meshcaPA.stopClean(t)
}
