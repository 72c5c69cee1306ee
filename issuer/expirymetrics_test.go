package issuer_test

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
)

// expirySeries returns the series of the expiry gauge as
// "kind/cluster/sha256=value", sorted.
func expirySeries(t *testing.T, reg prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != ops.CAExpiryMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out = append(out, l["kind"]+"/"+l["cluster"]+"/"+l["sha256"]+"="+unixRFC3339(m.GetGauge().GetValue()))
		}
	}
	slices.Sort(out)
	return out
}

func unixRFC3339(v float64) string { return time.Unix(int64(v), 0).UTC().Format(time.RFC3339) }

func series(kind, cluster string, a *ca.Authority) string {
	fp := sha256.Sum256(a.Certificate.Raw)
	return kind + "/" + cluster + "/" + hex.EncodeToString(fp[:]) + "=" + a.Certificate.NotAfter.UTC().Format(time.RFC3339)
}

// The issuer shares the expiry gauge another component of the process
// (the root) registered with the same description, exports its
// intermediates, roots and credential, and replaces only the series it
// set.
func TestCAMetricsShareTheExpiryGauge(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	rootGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: ops.CAExpiryMetric,
		Help: "NotAfter of a CA certificate in Unix seconds, by kind (root, intermediate, credential), cluster and SHA-256.",
	}, []string{"kind", "cluster", "sha256"})
	reg.MustRegister(rootGauge)
	rootGauge.WithLabelValues("intermediate", "west", "feed").Set(0)
	const foreign = "intermediate/west/feed=1970-01-01T00:00:00Z"

	m, err := issuer.NewCAMetrics(reg, "east")
	if err != nil {
		t.Fatal(err)
	}
	old := testkit.New(t, testkit.Options{Now: t0, IntermediateTTL: 24 * time.Hour})
	next := testkit.New(t, testkit.Options{Now: t0.Add(time.Hour), IntermediateTTL: 48 * time.Hour, RootKey: "root2"})
	cred := next.Root // any certificate stands in for the credential here

	m.Set(issuer.CAState{Held: []*ca.Authority{old.Intermediate}, Roots: old.Bundle.Roots(), Credential: cred.Certificate})
	want := []string{foreign, series("intermediate", "east", old.Intermediate), series("root", "", old.Root), series("credential", "east", cred)}
	slices.Sort(want)
	if got := expirySeries(t, reg); !slices.Equal(got, want) {
		t.Fatalf("after the first Set:\n got %q\nwant %q", got, want)
	}

	m.Set(issuer.CAState{Held: []*ca.Authority{next.Intermediate}, Roots: next.Bundle.Roots()})
	want = []string{foreign, series("intermediate", "east", next.Intermediate), series("root", "", next.Root)}
	slices.Sort(want)
	if got := expirySeries(t, reg); !slices.Equal(got, want) {
		t.Fatalf("after the second Set (old ones and the credential gone, the root's kept):\n got %q\nwant %q", got, want)
	}
}
