package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
)

var _ store.Pruner = (*Store)(nil)

// pruneChunk is the most rows one DELETE removes, so that pruning a large
// backlog never holds many row locks, or one long transaction, at a time.
const pruneChunk = 5000

// PruneCertificates deletes the certificates whose NotAfter is strictly
// before expiredBefore, in chunks of pruneChunk rows, each its own
// transaction, and returns how many it deleted (also when it fails part
// way). Audit events are never deleted.
func (s *Store) PruneCertificates(ctx context.Context, expiredBefore time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("postgres: prune certificates: %w", store.ErrClosed)
	}
	// Stored whole seconds: na < t iff na < ceil(t).
	cutoff := unixCeil(expiredBefore)
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM certificates WHERE serial IN (
			SELECT serial FROM certificates WHERE not_after < $1 LIMIT $2)`, cutoff, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("postgres: prune certificates: %w", err)
		}
		total += tag.RowsAffected()
		// Every chunk removes rows that no write adds back (a certificate
		// is recorded when issued, not after it expired), so this ends.
		if tag.RowsAffected() < pruneChunk {
			return total, nil
		}
	}
}
