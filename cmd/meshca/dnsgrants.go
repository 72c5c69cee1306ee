package main

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/issuer"
)

// dnsGrantConfig is one entry of dnsGrants: an identity whose certificates
// may carry DNS names, and which (issuer.DNSGrant). The identity is named
// by spiffeID, or by namespace and serviceAccount in the issuer's trust
// domain.
type dnsGrantConfig struct {
	// SPIFFEID names the identity, e.g.
	// spiffe://cluster.local/ns/istio-system/sa/istiod. Exclusive with
	// Namespace and ServiceAccount.
	SPIFFEID string `json:"spiffeID,omitempty"`
	// Namespace and ServiceAccount name the identity in the issuer's
	// trust domain, e.g. istio-system and istiod.
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Cluster is the cluster the identity must be attested in. Default:
	// the issuer's own.
	Cluster string `json:"cluster,omitempty"`
	// DNSNames are the only DNS names it may ask for. Required.
	DNSNames []string `json:"dnsNames,omitempty"`
}

// dnsGrants maps the dnsGrants entries of an issuer of td to the issuer's
// grants and validates them (issuer.ValidateDNSGrants).
func dnsGrants(cfgs []dnsGrantConfig, td spiffeid.TrustDomain) ([]issuer.DNSGrant, error) {
	var out []issuer.DNSGrant
	for i, c := range cfgs {
		var id spiffeid.ID
		var err error
		switch {
		case c.SPIFFEID != "" && (c.Namespace != "" || c.ServiceAccount != ""):
			return nil, fmt.Errorf("dnsGrants[%d]: give spiffeID or namespace and serviceAccount, not both", i)
		case c.SPIFFEID != "":
			id, err = spiffeid.FromString(c.SPIFFEID)
		case c.Namespace == "" || c.ServiceAccount == "":
			return nil, fmt.Errorf("dnsGrants[%d]: spiffeID, or namespace and serviceAccount, are required", i)
		default:
			id, err = spiffeid.FromSegments(td, "ns", c.Namespace, "sa", c.ServiceAccount)
		}
		if err != nil {
			return nil, fmt.Errorf("dnsGrants[%d]: identity: %w", i, err)
		}
		out = append(out, issuer.DNSGrant{SPIFFEID: id, Cluster: c.Cluster, DNSNames: c.DNSNames})
	}
	if err := issuer.ValidateDNSGrants(out, td); err != nil {
		return nil, fmt.Errorf("dnsGrants: %w", err)
	}
	return out, nil
}
