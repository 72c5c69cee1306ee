package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/meshca/meshca/store"
)

var _ store.StandaloneRootStore = (*Store)(nil)

// PinStandaloneRoot records fingerprint as the trust domain's cluster root
// unless one is recorded, and returns the recorded one. The insert
// does nothing on a conflict, and a recorded row never changes, so reading
// it back after a lost insert gives the winner's fingerprint.
func (s *Store) PinStandaloneRoot(ctx context.Context, trustDomain, cluster, fingerprint string) (string, error) {
	if trustDomain == "" || fingerprint == "" {
		return "", errors.New("sqlite: pin standalone root: empty trust domain or fingerprint")
	}
	if err := s.insertStandaloneRoot(ctx, trustDomain, cluster, fingerprint); err != nil {
		return "", fmt.Errorf("sqlite: pin standalone root: %w", err)
	}
	return s.StandaloneRoot(ctx, trustDomain, cluster)
}

// insertStandaloneRoot runs the one statement on the writer connection,
// which the group-commit batches and writeTx also take one at a time.
func (s *Store) insertStandaloneRoot(ctx context.Context, trustDomain, cluster, fingerprint string) error {
	s.direct.RLock()
	defer s.direct.RUnlock()
	if s.closed.Load() {
		return store.ErrClosed
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO standalone_roots (trust_domain, cluster, fingerprint, created_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (trust_domain, cluster) DO NOTHING`,
		trustDomain, cluster, fingerprint, s.now().Unix())
	return err
}

// StandaloneRoot returns the recorded root fingerprint of the trust
// domain's cluster, or an error wrapping store.ErrNotFound.
func (s *Store) StandaloneRoot(ctx context.Context, trustDomain, cluster string) (string, error) {
	if s.closed.Load() {
		return "", fmt.Errorf("sqlite: standalone root: %w", store.ErrClosed)
	}
	var fp string
	err := s.r.QueryRowContext(ctx, `SELECT fingerprint FROM standalone_roots WHERE trust_domain = ? AND cluster = ?`,
		trustDomain, cluster).Scan(&fp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("sqlite: standalone root of %s cluster %q: %w", trustDomain, cluster, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: standalone root: %w", err)
	}
	return fp, nil
}
