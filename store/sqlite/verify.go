package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/meshca/meshca/store"
)

// VerifyAuditLog verifies the audit chain in the database file at path, as
// [Store.VerifyAuditChain] does, and returns the head of the chain as far as
// it verified. It opens its own query-only connection: it creates nothing,
// runs no migrations and never writes, so it is safe against a database that
// a running meshca has open (`meshca audit verify --data-dir`).
//
// The chain must also pass through every anchor (see
// [store.ChainVerifier.Anchor]); a chain that does not fails with an error
// wrapping a *store.AnchorError.
func VerifyAuditLog(ctx context.Context, path string, anchors ...store.ChainHead) (store.ChainHead, error) {
	head, err := verifyAuditLog(ctx, path, anchors)
	if err != nil {
		return head, fmt.Errorf("sqlite: verify audit log: %w", err)
	}
	return head, nil
}

func verifyAuditLog(ctx context.Context, path string, anchors []store.ChainHead) (store.ChainHead, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return store.ChainHead{}, err
	}
	// Opening would create a missing file; a missing database is an error.
	if _, err := os.Stat(abs); err != nil {
		return store.ChainHead{}, err
	}
	db, err := sql.Open("sqlite", dsn(abs, url.Values{"_pragma": {"busy_timeout(5000)", "query_only(1)"}}))
	if err != nil {
		return store.ChainHead{}, err
	}
	defer db.Close()
	// eachEvent reads through s.r only.
	s := &Store{r: db}
	var v store.ChainVerifier
	for _, a := range anchors {
		v.Anchor(a)
	}
	if err := s.eachEvent(ctx, time.Time{}, v.Verify); err != nil {
		return v.Head(), err
	}
	return v.Head(), v.Finish()
}
