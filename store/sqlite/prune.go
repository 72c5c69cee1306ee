package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
)

var _ store.Pruner = (*Store)(nil)

// pruneChunk is the most rows one DELETE removes: each chunk holds the write
// lock only briefly, between the group committer's batches.
const pruneChunk = 5000

// PruneCertificates deletes the certificates whose NotAfter is strictly
// before expiredBefore, in chunks of pruneChunk rows, each its own
// transaction on the writer connection, and returns how many it deleted
// (also when it fails part way). Audit events are never deleted.
func (s *Store) PruneCertificates(ctx context.Context, expiredBefore time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("sqlite: prune certificates: %w", store.ErrClosed)
	}
	cutoff := unixCeil(expiredBefore) // stored whole seconds: na < t iff na < ceil(t)
	var total int64
	for {
		res, err := s.w.ExecContext(ctx, `DELETE FROM certificates WHERE serial IN (
			SELECT serial FROM certificates WHERE not_after < ? LIMIT ?)`, cutoff, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("sqlite: prune certificates: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("sqlite: prune certificates: %w", err)
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}
