package sqlq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/meshca/meshca/store"
)

// PinStandaloneRoot records fingerprint as the trust domain's cluster root
// unless one is recorded, and returns the recorded one. The insert does
// nothing on a conflict (PostgreSQL waits for a concurrent insert of the
// same key to commit or roll back; SQLite serializes writes on its writer
// connection), and a recorded row never changes, so reading it back after a
// lost insert gives the winner's fingerprint.
func (w *Writes) PinStandaloneRoot(ctx context.Context, trustDomain, cluster, fingerprint string) (string, error) {
	fp, err := w.pinStandaloneRoot(ctx, trustDomain, cluster, fingerprint)
	if err != nil {
		return "", fmt.Errorf("%s: pin standalone root: %w", w.Backend, err)
	}
	return fp, nil
}

func (w *Writes) pinStandaloneRoot(ctx context.Context, trustDomain, cluster, fingerprint string) (string, error) {
	if trustDomain == "" || fingerprint == "" {
		return "", errors.New("empty trust domain or fingerprint")
	}
	if err := w.checkText([2]string{"trust domain", trustDomain}, [2]string{"cluster", cluster},
		[2]string{"fingerprint", fingerprint}); err != nil {
		return "", err
	}
	var fp string
	err := w.Direct(func(q Querier) error {
		if _, err := q.Exec(ctx, `INSERT INTO standalone_roots (trust_domain, cluster, fingerprint, created_at)
			VALUES (`+list(w.Ph, 4)+`) ON CONFLICT (trust_domain, cluster) DO NOTHING`,
			trustDomain, cluster, fingerprint, w.Now().Unix()); err != nil {
			return err
		}
		var err error
		fp, err = standaloneRoot(ctx, q, w.Ph, trustDomain, cluster)
		return err
	})
	return fp, err
}

// StandaloneRoot returns the recorded root fingerprint of the trust
// domain's cluster, or an error wrapping store.ErrNotFound.
func (r *Reads) StandaloneRoot(ctx context.Context, trustDomain, cluster string) (string, error) {
	return read(r, "standalone root", false, func() (string, error) {
		return standaloneRoot(ctx, r.DB, r.Ph, trustDomain, cluster)
	})
}

// standaloneRoot reads the recorded root fingerprint of the trust domain's
// cluster from q; none wraps store.ErrNotFound.
func standaloneRoot(ctx context.Context, q Querier, ph Placeholder, trustDomain, cluster string) (string, error) {
	var fp string
	err := q.QueryRow(ctx, `SELECT fingerprint FROM standalone_roots WHERE trust_domain = `+ph(1)+` AND cluster = `+ph(2),
		trustDomain, cluster).Scan(&fp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("standalone root of %s cluster %q: %w", trustDomain, cluster, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("standalone root: %w", err)
	}
	return fp, nil
}
