package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/internal/sqlq"
)

var _ store.Pruner = (*Store)(nil)

// PruneCertificates deletes the certificates whose NotAfter is strictly
// before expiredBefore, in chunks of sqlq.PruneChunk rows, each its own
// transaction, so that pruning a large backlog never holds many row locks,
// or one long transaction, at a time. It returns how many it deleted (also
// when it fails part way). Audit events are never deleted.
func (s *Store) PruneCertificates(ctx context.Context, expiredBefore time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("postgres: prune certificates: %w", store.ErrClosed)
	}
	total, err := sqlq.PruneOn(ctx, on{s.pool}, sqlq.Dollar, expiredBefore)
	if err != nil {
		return total, fmt.Errorf("postgres: prune certificates: %w", err)
	}
	return total, nil
}
