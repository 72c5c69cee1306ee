package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshca/meshca/store"
)

var _ store.StandaloneRootStore = (*Store)(nil)

// PinStandaloneRoot records fingerprint as the trust domain's cluster root
// unless one is recorded, and returns the recorded one. The insert
// does nothing on a conflict (it waits for a concurrent insert of the same
// key to commit or roll back), and a recorded row never changes, so reading
// it back after a lost insert gives the winner's fingerprint.
func (s *Store) PinStandaloneRoot(ctx context.Context, trustDomain, cluster, fingerprint string) (string, error) {
	if trustDomain == "" || fingerprint == "" {
		return "", errors.New("postgres: pin standalone root: empty trust domain or fingerprint")
	}
	if err := checkText([][2]string{{"trust domain", trustDomain}, {"cluster", cluster}, {"fingerprint", fingerprint}}); err != nil {
		return "", fmt.Errorf("postgres: pin standalone root: %w", err)
	}
	if s.closed.Load() {
		return "", fmt.Errorf("postgres: pin standalone root: %w", store.ErrClosed)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO standalone_roots (trust_domain, cluster, fingerprint, created_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (trust_domain, cluster) DO NOTHING`,
		trustDomain, cluster, fingerprint, s.now().Unix())
	if err != nil {
		return "", fmt.Errorf("postgres: pin standalone root: %w", err)
	}
	return s.StandaloneRoot(ctx, trustDomain, cluster)
}

// StandaloneRoot returns the recorded root fingerprint of the trust
// domain's cluster, or an error wrapping store.ErrNotFound.
func (s *Store) StandaloneRoot(ctx context.Context, trustDomain, cluster string) (string, error) {
	if s.closed.Load() {
		return "", fmt.Errorf("postgres: standalone root: %w", store.ErrClosed)
	}
	var fp string
	err := s.pool.QueryRow(ctx, `SELECT fingerprint FROM standalone_roots WHERE trust_domain = $1 AND cluster = $2`,
		trustDomain, cluster).Scan(&fp)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("postgres: standalone root of %s cluster %q: %w", trustDomain, cluster, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("postgres: standalone root: %w", err)
	}
	return fp, nil
}
