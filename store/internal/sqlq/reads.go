package sqlq

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/meshca/meshca/store"
)

// Reads implements the store's plain reads (certificates, clusters,
// intermediates, roots, revocations, cluster credentials) over a backend's
// read connections; each backend embeds it in its Store and keeps the
// reads its driver or its snapshots shape, such as the audit chain.
type Reads struct {
	// Backend names the backend in errors: "sqlite", "postgres".
	Backend string
	// DB runs the reads; Ph numbers their arguments.
	DB Querier
	Ph Placeholder
	// ClusterOrder is the ORDER BY of Clusters: by name, in byte order.
	ClusterOrder string
	// Closed is the Store's closed flag: reads after Close wrap
	// store.ErrClosed.
	Closed *atomic.Bool
}

// closedErr is the error of op after Close, or nil before.
func (r *Reads) closedErr(op string) error {
	if r.Closed.Load() {
		return fmt.Errorf("%s: %s: %w", r.Backend, op, store.ErrClosed)
	}
	return nil
}

// wrap prefixes err, when not nil, with the backend and op.
func (r *Reads) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if op == "" {
		return fmt.Errorf("%s: %w", r.Backend, err)
	}
	return fmt.Errorf("%s: %s: %w", r.Backend, op, err)
}

// read runs fn unless the Store is closed and wraps its error.
func read[T any](r *Reads, op string, wrapOp bool, fn func() (T, error)) (T, error) {
	var zero T
	if err := r.closedErr(op); err != nil {
		return zero, err
	}
	v, err := fn()
	if err != nil {
		if !wrapOp {
			op = ""
		}
		return zero, r.wrap(op, err)
	}
	return v, nil
}

// Certificate returns the certificate with the given serial, or an error
// wrapping store.ErrNotFound.
func (r *Reads) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	return read(r, "certificate", false, func() (store.Certificate, error) {
		return CertificateBySerial(ctx, r.DB, r.Ph, serial)
	})
}

// Certificates lists the certificates matching f, newest first (NotBefore
// descending, then Serial ascending in byte order). No match is an empty
// result, not an error.
func (r *Reads) Certificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error) {
	return read(r, "certificates", true, func() ([]store.Certificate, error) {
		return Certificates(ctx, r.DB, r.Ph, f)
	})
}

// Cluster returns the named cluster, or an error wrapping store.ErrNotFound.
func (r *Reads) Cluster(ctx context.Context, name string) (store.Cluster, error) {
	return read(r, "cluster", false, func() (store.Cluster, error) {
		return ClusterByName(ctx, r.DB, r.Ph, name)
	})
}

// Clusters lists the registered clusters by name (byte order).
func (r *Reads) Clusters(ctx context.Context) ([]store.Cluster, error) {
	return read(r, "clusters", true, func() ([]store.Cluster, error) {
		return Collect(ctx, r.DB, ScanCluster, `SELECT `+ClusterColumns+` FROM clusters ORDER BY `+r.ClusterOrder)
	})
}

// Intermediates lists the intermediates matching f by NotBefore ascending,
// then Serial in byte order. No match is an empty result, not an error.
func (r *Reads) Intermediates(ctx context.Context, f store.IntermediateFilter) ([]store.Intermediate, error) {
	return read(r, "intermediates", true, func() ([]store.Intermediate, error) {
		q, args := IntermediatesQuery(f, r.Ph)
		return Collect(ctx, r.DB, ScanIntermediate, q, args...)
	})
}

// Roots lists every root recorded, by AddedAt ascending, then Fingerprint
// in byte order.
func (r *Reads) Roots(ctx context.Context) ([]store.Root, error) {
	return read(r, "roots", true, func() ([]store.Root, error) {
		return Collect(ctx, r.DB, ScanRoot, `SELECT `+RootColumns+` FROM roots ORDER BY added_at ASC, fingerprint ASC`)
	})
}

// Revocations lists the entries in force at now, by ID. None is an empty
// result, not an error.
func (r *Reads) Revocations(ctx context.Context, now time.Time) ([]store.Revocation, error) {
	return read(r, "revocations", true, func() ([]store.Revocation, error) {
		return Collect(ctx, r.DB, ScanRevocation, RevocationsSQL(r.Ph), now.Unix())
	})
}

// ClusterCredential returns the credential record of replica of the named
// cluster, or an error wrapping store.ErrNotFound.
func (r *Reads) ClusterCredential(ctx context.Context, cluster, replica string) (store.ClusterCredential, error) {
	return read(r, "cluster credential", false, func() (store.ClusterCredential, error) {
		return ClusterCredential(ctx, r.DB, r.Ph, cluster, replica)
	})
}

// ClusterCredentials lists the credential records of every replica of the
// named cluster, by replica.
func (r *Reads) ClusterCredentials(ctx context.Context, cluster string) ([]store.ClusterCredential, error) {
	return read(r, "cluster credentials", false, func() ([]store.ClusterCredential, error) {
		return ClusterCredentials(ctx, r.DB, r.Ph, cluster)
	})
}
