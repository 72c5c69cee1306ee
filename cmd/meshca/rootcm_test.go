package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestIstioRootConfigMapsMapping holds the YAML of istioRootConfigMaps to
// the controller's config and the stack: off by default, every field
// carried over, the identity defaulting to the short host name.
func TestIstioRootConfigMapsMapping(t *testing.T) {
	cfg := mustDecodeValidated(t, defaultIssuerConfig, "cluster: east\nclusters: [{name: east}]\n")
	sc, err := issuerStack(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sc.RootConfigMaps != nil {
		t.Error("root ConfigMaps on by default")
	}

	y := "istioRootConfigMaps: {enabled: true, leaseNamespace: meshca-system, namespaces: [a, b], selector: \"x=y\", identity: issuer-1, ownerClusterRole: meshca-istio-root-cert}\n"
	on := mustDecodeValidated(t, defaultIssuerConfig, y+"cluster: east\nclusters: [{name: east}]\n")
	rc := on.IstioRootConfigMaps.rootcmConfig(placeholderClient)
	if rc.LeaseNamespace != "meshca-system" || rc.Identity != "issuer-1" || rc.Selector != "x=y" || rc.OwnerClusterRole != "meshca-istio-root-cert" || !slices.Equal(rc.Namespaces, []string{"a", "b"}) {
		t.Errorf("mapped %+v", rc)
	}
	on.IstioRootConfigMaps.Identity = ""
	host, _ := os.Hostname()
	short, _, _ := strings.Cut(host, ".")
	if got := on.IstioRootConfigMaps.rootcmConfig(placeholderClient).Identity; got != short || got == "" {
		t.Errorf("default identity %q, want the short host name %q", got, short)
	}
}
