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
// SPIFFE mutual TLS.
func TestInstallAndMutualTLS(t *testing.T) {
	n := nodetest.Start(t)
	meshca := buildImages(t, n)
	r := install(t, n, meshca, []string{"*/denied"})

	ns := n.Namespace(t)
	a, b := newWorkload(t, ns, "a"), newWorkload(t, ns, "b")
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
	for _, c := range [][2]*workload{{a, b}, {b, a}} {
		from, to := c[0], c[1]
		got, err := get("http://" + from.status + "/call")
		if want := "hello " + from.id() + " from " + to.id(); err != nil || got != want {
			t.Errorf("%s calling %s over mutual TLS: %q, %v; want %q", from.name, to.name, got, err, want)
		}
	}
}
