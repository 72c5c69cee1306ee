package sqlq

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/meshca/meshca/store"
)

var _ store.Pruner = (*Writes)(nil)

// Writes implements the store's rare administrative writes (revocations,
// intermediates, roots, cluster credentials), each its own transaction that
// also appends its audit event; each backend embeds it in its Store and
// supplies its transaction and its dialect.
//
// Of concurrent writes that conflict (two revocations of one kind and value,
// two swaps from one credential state) exactly one succeeds: PostgreSQL
// makes the others wait for the first's row lock and re-check against the
// committed row; SQLite serializes them on its writer connection.
type Writes struct {
	// Backend names the backend in errors: "sqlite", "postgres".
	Backend string
	Ph      Placeholder
	Now     func() time.Time
	// Tx runs fn in one transaction, then appends ev (read after fn
	// returns, so fn may fill it in) to the audit chain and commits.
	Tx func(ctx context.Context, ev *store.AuditEvent, fn func(ctx context.Context, tx Querier) error) error
	// CheckText rejects text the backend cannot store byte for byte, each
	// field a name and its value; nil accepts all.
	CheckText func(fields [][2]string) error
	// Flag is a boolean as the backend stores it.
	Flag func(bool) any
	// KeepCertificatesRevoked turns the lifted revocation of SPIFFE ID id
	// into one serial revocation per certificate of id recorded before the
	// lift and not expired at now, within tx.
	KeepCertificatesRevoked func(ctx context.Context, tx Querier, id string, lifted store.Revocation, now time.Time) error
	// Direct runs fn, outside any transaction, on the connection the
	// single-statement writes that append no audit event use: the pool for
	// PostgreSQL; for SQLite the writer connection, which Close waits for.
	// After Close it returns store.ErrClosed without calling fn.
	Direct func(fn func(q Querier) error) error
	// Prune runs PruneCertificates' chunks, each a transaction of its own:
	// the pool for PostgreSQL, the writer connection for SQLite.
	Prune Querier
	// Closed is the Store's closed flag: pruning after Close wraps
	// store.ErrClosed.
	Closed *atomic.Bool
}

func (w *Writes) checkText(fields ...[2]string) error {
	if w.CheckText == nil {
		return nil
	}
	return w.CheckText(fields)
}

// Revoke records r with ev in one transaction and returns r as stored: ID
// set, RevokedAt (the store's now when zero) and ExpiresAt at whole seconds
// in UTC. An entry of the same kind and value not lifted, even one that has
// expired, wraps store.ErrAlreadyExists and writes nothing. One that was
// lifted is replaced: its row goes and r gets a new ID, larger than every ID
// assigned before, so that whoever tracks the largest ID seen also sees it
// come back. The lifted entry's history is in the audit log.
//
// For writes an entry is in force until it is lifted (lifted_at = 0), so
// Revoke and Unrevoke do not depend on any clock; one whose ExpiresAt has
// passed still counts, it is only left out of Revocations.
func (w *Writes) Revoke(ctx context.Context, r store.Revocation, ev store.AuditEvent) (store.Revocation, error) {
	out, err := w.revoke(ctx, r, ev)
	if err != nil {
		return store.Revocation{}, fmt.Errorf("%s: revoke %s %s: %w", w.Backend, r.Kind, r.Value, err)
	}
	return out, nil
}

func (w *Writes) revoke(ctx context.Context, r store.Revocation, ev store.AuditEvent) (store.Revocation, error) {
	if err := r.Validate(); err != nil {
		return store.Revocation{}, err
	}
	if err := w.checkText([2]string{"value", r.Value}, [2]string{"cluster", r.Cluster}, [2]string{"reason", r.Reason},
		[2]string{"revoked by", r.RevokedBy}); err != nil {
		return store.Revocation{}, err
	}
	now := w.Now()
	ev = WithTime(ev, now)
	r, expires := PrepareRevocation(r, now)
	err := w.Tx(ctx, &ev, func(ctx context.Context, tx Querier) error {
		var err error
		r, err = InsertRevocation(ctx, tx, w.Ph, r, expires)
		return err
	})
	if err != nil {
		return store.Revocation{}, err
	}
	return r, nil
}

// Unrevoke lifts the entry of kind and value not lifted yet (expired or
// not), with ev, in one transaction. None wraps store.ErrNotFound and
// writes nothing. Lifting a SPIFFE ID keeps its certificates revoked: see
// KeepCertificatesRevoked.
func (w *Writes) Unrevoke(ctx context.Context, kind, value string, ev store.AuditEvent) error {
	if err := w.unrevoke(ctx, kind, value, ev); err != nil {
		return fmt.Errorf("%s: unrevoke %s %s: %w", w.Backend, kind, value, err)
	}
	return nil
}

func (w *Writes) unrevoke(ctx context.Context, kind, value string, ev store.AuditEvent) error {
	if err := store.ValidateRevocationTarget(kind, value); err != nil {
		return err
	}
	if err := w.checkText([2]string{"value", value}); err != nil {
		return err
	}
	now := w.Now()
	ev = WithTime(ev, now)
	return w.Tx(ctx, &ev, func(ctx context.Context, tx Querier) error {
		lifted, err := Lift(ctx, tx, w.Ph, kind, value, now)
		if err != nil || kind != store.RevokeSPIFFEID {
			return err
		}
		return w.KeepCertificatesRevoked(ctx, tx, value, lifted, now)
	})
}

// RecordIntermediate records in with ev in one transaction. A serial
// already recorded wraps store.ErrAlreadyExists.
func (w *Writes) RecordIntermediate(ctx context.Context, in store.Intermediate, ev store.AuditEvent) error {
	if err := CheckIntermediate(in); err != nil {
		return fmt.Errorf("%s: record intermediate %s: %w", w.Backend, in.Serial, err)
	}
	now := w.Now()
	ev = WithTime(ev, now)
	err := w.Tx(ctx, &ev, func(ctx context.Context, tx Querier) error {
		return InsertNew(ctx, tx, "intermediate", InsertIntermediateSQL(w.Ph), IntermediateArgs(in, now.Unix())...)
	})
	if err != nil {
		return fmt.Errorf("%s: record intermediate %s: %w", w.Backend, in.Serial, err)
	}
	return nil
}

// AddRoot records r with ev in one transaction. A fingerprint already
// recorded wraps store.ErrAlreadyExists.
func (w *Writes) AddRoot(ctx context.Context, r store.Root, ev store.AuditEvent) error {
	if err := CheckRoot(r); err != nil {
		return fmt.Errorf("%s: add root %s: %w", w.Backend, r.Fingerprint, err)
	}
	ev = WithTime(ev, w.Now())
	err := w.Tx(ctx, &ev, func(ctx context.Context, tx Querier) error {
		return InsertNew(ctx, tx, "root", InsertRootSQL(w.Ph), RootArgs(r)...)
	})
	if err != nil {
		return fmt.Errorf("%s: add root %s: %w", w.Backend, r.Fingerprint, err)
	}
	return nil
}

// SwapClusterCredential replaces the record of next.Cluster and next.Replica
// with next, with ev, in one transaction, if the stored record has old's
// state (no record when old.Cluster is empty); otherwise the error wraps
// store.ErrConflict and nothing is written.
func (w *Writes) SwapClusterCredential(ctx context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error {
	if err := w.swapClusterCredential(ctx, old, next, ev); err != nil {
		return fmt.Errorf("%s: swap cluster credential %s: %w", w.Backend, next.Cluster, err)
	}
	return nil
}

func (w *Writes) swapClusterCredential(ctx context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error {
	if err := store.ValidateSwapClusterCredential(old, next); err != nil {
		return err
	}
	if err := w.checkText([2]string{"cluster", next.Cluster}, [2]string{"replica", next.Replica},
		[2]string{"current serial", next.Current}, [2]string{"previous serial", next.Previous},
		[2]string{"expected current serial", old.Current}, [2]string{"expected previous serial", old.Previous}); err != nil {
		return err
	}
	now := w.Now()
	ev = WithTime(ev, now)
	return w.Tx(ctx, &ev, func(ctx context.Context, tx Querier) error {
		return SwapCredential(ctx, tx, w.Ph, w.Flag, old, next, now)
	})
}

// PruneCertificates deletes the certificates whose NotAfter is strictly
// before expiredBefore, in chunks of PruneChunk rows, each its own
// transaction, so that pruning a large backlog never holds a lock, or one
// long transaction, for long (on SQLite each chunk takes the writer only
// between the group committer's batches). It returns how many it deleted
// (also when it fails part way). Audit events are never deleted.
func (w *Writes) PruneCertificates(ctx context.Context, expiredBefore time.Time) (int64, error) {
	if w.Closed.Load() {
		return 0, fmt.Errorf("%s: prune certificates: %w", w.Backend, store.ErrClosed)
	}
	total, err := PruneOn(ctx, w.Prune, w.Ph, expiredBefore)
	if err != nil {
		return total, fmt.Errorf("%s: prune certificates: %w", w.Backend, err)
	}
	return total, nil
}

// SetClusterDNSNames replaces the DNS names of the named cluster and
// appends ev in one transaction; an unknown cluster wraps store.ErrNotFound
// and writes nothing.
func (w *Writes) SetClusterDNSNames(ctx context.Context, name string, dnsNames []string, ev store.AuditEvent) error {
	if err := w.setClusterDNSNames(ctx, name, dnsNames, ev); err != nil {
		return fmt.Errorf("%s: set DNS names of cluster %s: %w", w.Backend, name, err)
	}
	return nil
}

func (w *Writes) setClusterDNSNames(ctx context.Context, name string, dnsNames []string, ev store.AuditEvent) error {
	if err := store.ValidateClusterDNSNames(dnsNames); err != nil {
		return err
	}
	if err := w.checkText([2]string{"name", name}); err != nil {
		return err
	}
	ev = WithTime(ev, w.Now())
	return w.Tx(ctx, &ev, func(ctx context.Context, tx Querier) error {
		n, err := tx.Exec(ctx, `UPDATE clusters SET dns_names = `+w.Ph(1)+` WHERE name = `+w.Ph(2), JoinDNSNames(dnsNames), name)
		if err != nil {
			return fmt.Errorf("update cluster: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("cluster %s: %w", name, store.ErrNotFound)
		}
		return nil
	})
}

// pruneThenPut drops the rows that expired by now (prune, with now's Unix
// seconds as its argument), then runs put, a conditional upsert, with
// args(now). stored is false when put changed no row: the stored row wins.
func (w *Writes) pruneThenPut(ctx context.Context, prune, put string, args func(time.Time) []any) (stored bool, err error) {
	err = w.Direct(func(q Querier) error {
		now := w.Now()
		if _, err := q.Exec(ctx, prune, now.Unix()); err != nil {
			return err
		}
		n, err := q.Exec(ctx, put, args(now)...)
		stored = n > 0
		return err
	})
	return stored, err
}
