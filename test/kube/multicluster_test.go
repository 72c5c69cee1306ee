package kube

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/test/kubetest"
)

// TestCrossCluster runs one issuer for two real clusters that share an
// issuer URL (as real clusters often do) but not their signing keys.
func TestCrossCluster(t *testing.T) {
	t.Parallel()
	e := east(t)
	wc := kubetest.Start(t, kubetest.Options{Name: "west"})
	att, err := attest.NewMultiCluster(attest.MultiClusterConfig{
		Clusters: map[string]attest.Attestor{
			"east": attest.NewCached(newTokenReview(t, e, "east", attest.TokenReviewConfig{}), attest.CacheConfig{}),
			"west": attest.NewCached(newTokenReview(t, wc, "west", attest.TokenReviewConfig{}), attest.CacheConfig{}),
		},
		Local:   "east",
		Aliases: map[string]string{"Kubernetes": "east"},
	})
	if err != nil {
		t.Fatal(err)
	}
	w := newWire(t, att)
	eastWL, westWL := newWorkload(t, e), newWorkload(t, wc)
	eastTok := e.PodToken(t, eastWL.ns, eastWL.sa, eastWL.pod, audience)
	westTok := wc.PodToken(t, westWL.ns, westWL.sa, westWL.pod, audience)

	w.mustIssue(t, eastTok, "", eastWL.spiffeID())
	w.mustIssue(t, eastTok, "east", eastWL.spiffeID())
	w.mustIssue(t, eastTok, "Kubernetes", eastWL.spiffeID())
	w.mustIssue(t, westTok, "west", westWL.spiffeID())

	for _, tc := range []struct {
		name, token, clusterID string
	}{
		{"west token as the local cluster", westTok, ""},
		{"west token as east", westTok, "east"},
		{"west token through east's alias", westTok, "Kubernetes"},
		{"east token as west", eastTok, "west"},
		{"unknown cluster", eastTok, "north"},
		{"cluster ID differs in case", eastTok, "East"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.mustFail(t, tc.token, tc.clusterID, codes.Unauthenticated)
		})
	}
	// Same issuer URL, other signing key: local verification tells them
	// apart too.
	eastJWKS := newWire(t, newRemoteJWKS(t, e, "east"))
	eastJWKS.mustIssue(t, eastTok, "", eastWL.spiffeID())
	eastJWKS.mustFail(t, westTok, "", codes.Unauthenticated)

	rows := w.certRows(t)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want the 4 successful issuances", len(rows))
	}
	w.requireTokensNotLogged(t, eastTok, westTok)
}
