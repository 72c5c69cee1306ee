package sqlite

import (
	"context"
	"fmt"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

// Cluster returns the named cluster, or an error wrapping store.ErrNotFound.
func (s *Store) Cluster(ctx context.Context, name string) (store.Cluster, error) {
	if s.closed.Load() {
		return store.Cluster{}, fmt.Errorf("sqlite: cluster: %w", store.ErrClosed)
	}
	c, err := sqlq.ClusterByName(ctx, on{s.r}, sqlq.Question, name)
	if err != nil {
		return store.Cluster{}, fmt.Errorf("sqlite: %w", err)
	}
	return c, nil
}

// Clusters lists the registered clusters by name.
func (s *Store) Clusters(ctx context.Context) ([]store.Cluster, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: clusters: %w", store.ErrClosed)
	}
	cs, err := collect(ctx, s.r, sqlq.ScanCluster, `SELECT `+sqlq.ClusterColumns+` FROM clusters ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: clusters: %w", err)
	}
	return cs, nil
}

// Intermediates lists the intermediates matching f by NotBefore ascending,
// then Serial. No match is an empty result, not an error.
func (s *Store) Intermediates(ctx context.Context, f store.IntermediateFilter) ([]store.Intermediate, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: intermediates: %w", store.ErrClosed)
	}
	q, args := sqlq.IntermediatesQuery(f, sqlq.Question)
	ins, err := collect(ctx, s.r, sqlq.ScanIntermediate, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: intermediates: %w", err)
	}
	return ins, nil
}

// Roots lists every root recorded, by AddedAt ascending, then Fingerprint.
func (s *Store) Roots(ctx context.Context) ([]store.Root, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: roots: %w", store.ErrClosed)
	}
	roots, err := collect(ctx, s.r, sqlq.ScanRoot,
		`SELECT `+sqlq.RootColumns+` FROM roots ORDER BY added_at ASC, fingerprint ASC`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: roots: %w", err)
	}
	return roots, nil
}
