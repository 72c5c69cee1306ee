package attest

import (
	"context"
	"errors"
	"fmt"
	"maps"
)

// MultiClusterConfig configures [NewMultiCluster].
type MultiClusterConfig struct {
	// Clusters maps each cluster name to the attestor of that cluster (for
	// example a [TokenReview] against that cluster's API server, configured
	// with the same Cluster name). Required: at least one; names must not
	// be empty.
	Clusters map[string]Attestor
	// Local is the cluster a request with an empty ClusterID is attested in
	// (Istio's "empty clusterid means the local cluster"). Required; must be
	// a key of Clusters.
	Local string
	// Aliases maps further names a caller may send as its cluster ID to a
	// cluster name. istio-agent sends the Istio cluster name, which is often
	// "Kubernetes" whatever the cluster is called. Nil means none. An alias
	// must not be empty nor shadow a cluster name. IstioDefaultClusterID
	// means Local unless a cluster or an alias claims it.
	Aliases map[string]string
}

// IstioDefaultClusterID is the cluster ID istio-agent sends when nobody
// named its cluster (Istio's default cluster name, CLUSTER_ID unset). An
// injected sidecar sends it out of the box, so NewMultiCluster routes it to
// the local cluster unless a cluster or an alias of the configuration
// claims the name. It widens nothing: the local cluster's attestor still
// checks the token.
const IstioDefaultClusterID = "Kubernetes"

// Validate reports the first problem with c.
func (c MultiClusterConfig) Validate() error {
	if len(c.Clusters) == 0 {
		return errors.New("multi-cluster attestor: no clusters")
	}
	for name, a := range c.Clusters {
		switch {
		case name == "":
			return errors.New("multi-cluster attestor: empty cluster name")
		case a == nil:
			return fmt.Errorf("multi-cluster attestor: cluster %q has no attestor", name)
		}
	}
	if _, ok := c.Clusters[c.Local]; !ok {
		return fmt.Errorf("multi-cluster attestor: local cluster %q is not configured", c.Local)
	}
	for alias, name := range c.Aliases {
		if alias == "" {
			return errors.New("multi-cluster attestor: empty alias (the empty cluster ID always means the local cluster)")
		}
		if _, ok := c.Clusters[alias]; ok {
			return fmt.Errorf("multi-cluster attestor: alias %q shadows a cluster name", alias)
		}
		if _, ok := c.Clusters[name]; !ok {
			return fmt.Errorf("multi-cluster attestor: alias %q names unknown cluster %q", alias, name)
		}
	}
	return nil
}

// NewMultiCluster returns an Attestor that lets one issuer attest tokens
// from several clusters. Each request goes to the attestor of the cluster
// its ClusterID names (directly or through an alias; empty, and
// IstioDefaultClusterID unless claimed, mean Local), with ClusterID rewritten to that cluster's name. An unknown cluster ID is
// rejected with ErrUnauthenticated without calling anything. A token is
// only ever checked by the cluster it claims to come from, so a token of
// cluster B presented as cluster A fails A's review.
//
// The returned Identity.Cluster is always the resolved cluster name. The
// maps in cfg are copied.
func NewMultiCluster(cfg MultiClusterConfig) (Attestor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	routes := maps.Clone(cfg.Clusters)
	names := make(map[string]string, len(cfg.Clusters)+len(cfg.Aliases)+1)
	for name := range cfg.Clusters {
		names[name] = name
	}
	for alias, name := range cfg.Aliases {
		names[alias] = name
	}
	names[""] = cfg.Local
	if _, claimed := names[IstioDefaultClusterID]; !claimed {
		names[IstioDefaultClusterID] = cfg.Local
	}
	return &multiCluster{routes: routes, names: names}, nil
}

type multiCluster struct {
	routes map[string]Attestor // cluster name → attestor
	names  map[string]string   // cluster ID or alias → cluster name
}

func (m *multiCluster) Attest(ctx context.Context, req Request) (Identity, error) {
	name, ok := m.names[req.ClusterID]
	if !ok {
		return Identity{}, because(ErrUnknownCluster, fmt.Errorf("%w: unknown cluster %q", ErrUnauthenticated, clip(req.ClusterID)))
	}
	req.ClusterID = name
	id, err := m.routes[name].Attest(ctx, req)
	if err != nil {
		return Identity{}, err
	}
	id.Cluster = name
	return id, nil
}
