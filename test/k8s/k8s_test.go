// Package k8s is the end-to-end suite on a real single-node cluster
// (test/nodetest): the chart is installed with helm into the node's API
// server, with images of this checkout built by tools/imagebuild, and
// workload pods get their identities from the meshca-agent native sidecar
// with projected tokens the kubelet issues. docs/kubernetes.md is the
// tutorial these tests run.
package k8s

import (
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/nodetest"
)

// svidWithin bounds how long a workload pod may take, from its creation,
// to hold an SVID; on an idle machine it is about a second.
const svidWithin = 60 * time.Second

// TestInstallAndMutualTLS installs the chart (issuer on PostgreSQL, root
// CA from a Secret, TokenReview attestation with pod binding) and starts
// two workload pods with the sidecar: each gets an SVID for its service
// account under the chart's root, and they talk to each other over
// SPIFFE mutual TLS. An istio-ca-root-cert ConfigMap meshca did not write
// is there from before the install to after the uninstall, untouched.
func TestInstallAndMutualTLS(t *testing.T) {
	n := nodetest.Start(t)
	meshca := buildImages(t, n)
	foreign := foreignRootCM(t, n)
	r := install(t, n, meshca, []string{"*/denied"})

	ns := n.Namespace(t)
	a, b := newWorkload(t, ns, "a"), newWorkload(t, ns, "b")
	a.ttl, b.ttl = renewTTL, renewTTL
	a.start(t, r, b)
	b.start(t, r, a)
	for _, w := range []*workload{a, b} {
		n.WaitPodRunning(t, ns, w.name)
		testkit.Eventually(t, svidWithin, w.name+" holds an SVID under the chart's root", func() error {
			chain, err := w.svid()
			if err != nil {
				return err
			}
			return w.checkSVID(chain, r.root)
		})
		t.Logf("%s: SVID %.1fs after the pod's creation", w.name, time.Since(w.created).Seconds())
	}
	checkMutualTLS(t, a, b)

	t.Run("denied service account", func(t *testing.T) { checkDenied(t, r, ns, a) })
	t.Run("revoke", func(t *testing.T) { checkRevoke(t, r, ns, a, b) })
	t.Run("kubelet restart", func(t *testing.T) { checkKubeletRestart(t, r, a, b) })
	t.Run("helm upgrade", func(t *testing.T) { checkUpgrade(t, r, a, b) })
	t.Run("deleted pod's token", func(t *testing.T) { checkDeletedPodToken(t, r, a) })
	t.Run("uninstall", func(t *testing.T) { checkUninstall(t, r, foreign) })
}
