package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/store"
)

// sharedRootAdvice tells the operator of a refused replica what to do.
const sharedRootAdvice = "mount the same root key in every replica (root.dir), e.g. from one Kubernetes Secret"

// standaloneRoot returns the file root a standalone issuer serves under,
// checked against the root its store records for the trust domain and
// cluster, so that replicas sharing a store serve under one root. The first
// replica on a store records its root (creating it if root.dir is empty); a
// replica whose root differs, or whose root.dir is empty once a root is
// recorded, is refused and creates nothing.
func standaloneRoot(ctx context.Context, c Config, db store.StandaloneRootStore) (*ca.Authority, error) {
	td, dir := c.TrustDomain, cmp.Or(c.RootDir, c.DataDir)
	recorded, err := db.StandaloneRoot(ctx, td.String(), c.Cluster)
	if errors.Is(err, store.ErrNotFound) {
		return pinFileRoot(ctx, db, c, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read the recorded root: %w", err)
	}
	root, err := ca.LoadFileRoot(ca.FileRootConfig{Dir: dir})
	if errors.Is(err, ca.ErrNoFileRoot) {
		return nil, fmt.Errorf("the store records root %s for trust domain %s cluster %q, but %s holds no root: refusing to create another; %s",
			recorded, td, c.Cluster, dir, sharedRootAdvice)
	}
	if err != nil {
		return nil, err
	}
	return root, sameRoot(recorded, root, td, c.Cluster, dir)
}

// pinFileRoot loads or creates the root in dir and records it for the
// trust domain and cluster, unless another replica recorded one first.
func pinFileRoot(ctx context.Context, db store.StandaloneRootStore, c Config, dir string) (*ca.Authority, error) {
	td := c.TrustDomain
	root, err := ca.LoadOrCreateFileRoot(ca.FileRootConfig{Dir: dir})
	if err != nil {
		return nil, err
	}
	fp := rootFingerprint(root)
	recorded, err := db.PinStandaloneRoot(ctx, td.String(), c.Cluster, fp)
	if err != nil {
		return nil, fmt.Errorf("record the root: %w", err)
	}
	if recorded == fp {
		c.logger().Info("serving under the root recorded in the store", "trust_domain", td.String(), "cluster", c.Cluster, "root_fingerprint", fp)
	}
	return root, sameRoot(recorded, root, td, c.Cluster, dir)
}

// sameRoot refuses root unless it is the recorded one.
func sameRoot(recorded string, root *ca.Authority, td spiffeid.TrustDomain, cluster, dir string) error {
	if fp := rootFingerprint(root); fp != recorded {
		return fmt.Errorf("the root in %s (SHA-256 %s) is not the root the store records for trust domain %s cluster %q (SHA-256 %s): "+
			"certificates from this replica would fail against the others' bundles; %s", dir, fp, td, cluster, recorded, sharedRootAdvice)
	}
	return nil
}

// rootFingerprint is the lower-case hex SHA-256 of the root's DER.
func rootFingerprint(root *ca.Authority) string { return fingerprint(root.Certificate) }
