// Package sqlq holds what the SQL backends (store/sqlite, store/postgres)
// share apart from their drivers and transactions: the column lists, the
// scanning of a row into a store type, the read queries built from a filter
// with the backend's placeholder, the whole-second time conversions, the
// chunked prune loop, and the plain reads (Reads), the administrative
// writes and the single-statement CRL, JWT authority and standalone-root
// writes (Writes) themselves, run over a Querier each backend adapts its
// driver to. Each backend keeps its own connections, transactions, group-committed
// issuance writes and dialect-specific statements.
package sqlq

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/meshca/meshca/store"
)

// Column lists, in the order the Scan functions read them.
const (
	CertColumns         = `serial, spiffe_id, cluster, not_before, not_after, fingerprint, pod_uid`
	EventColumns        = `seq, time, actor, action, cluster, spiffe_id, serial, detail, prev_hash, hash`
	ClusterColumns      = `name, trust_domain, created_at, dns_names`
	IntermediateColumns = `serial, cluster, trust_domain, root_fingerprint, not_before, not_after, fingerprint, certificate`
	RootColumns         = `fingerprint, certificate, key_ref, added_at, activate_at`
)

// Scanner is one row of a result: *sql.Row, *sql.Rows, pgx.Row or
// pgx.CollectableRow.
type Scanner interface{ Scan(dest ...any) error }

// Placeholder returns the text of the n-th (1-based) query argument: "?" for
// SQLite, "$n" for PostgreSQL.
type Placeholder func(n int) string

// UnixCeil returns the smallest whole Unix second not before t: stored
// second t' satisfies t' >= t exactly when t' >= UnixCeil(t).
func UnixCeil(t time.Time) int64 {
	if t.Nanosecond() > 0 {
		return t.Unix() + 1
	}
	return t.Unix()
}

// FromUnix is the UTC time of a stored whole second.
func FromUnix(sec int64) time.Time {
	return time.Unix(sec, 0).UTC()
}

// WithTime returns ev with Time set to now if it was zero.
func WithTime(ev store.AuditEvent, now time.Time) store.AuditEvent {
	if ev.Time.IsZero() {
		ev.Time = now
	}
	return ev
}

// ScanCert reads a row of CertColumns.
func ScanCert(sc Scanner) (store.Certificate, error) {
	var c store.Certificate
	var nb, na int64
	if err := sc.Scan(&c.Serial, &c.SPIFFEID, &c.Cluster, &nb, &na, &c.Fingerprint, &c.PodUID); err != nil {
		return store.Certificate{}, err
	}
	c.NotBefore, c.NotAfter = FromUnix(nb), FromUnix(na)
	return c, nil
}

// ScanEvent reads a row of EventColumns.
func ScanEvent(sc Scanner) (store.AuditEvent, error) {
	var ev store.AuditEvent
	var t int64
	err := sc.Scan(&ev.Seq, &t, &ev.Actor, &ev.Action, &ev.Cluster, &ev.SPIFFEID,
		&ev.Serial, &ev.Detail, &ev.PrevHash, &ev.Hash)
	if err != nil {
		return store.AuditEvent{}, err
	}
	ev.Time = FromUnix(t)
	return ev, nil
}

// ScanCluster reads a row of ClusterColumns.
func ScanCluster(sc Scanner) (store.Cluster, error) {
	var c store.Cluster
	var created int64
	var dns string
	if err := sc.Scan(&c.Name, &c.TrustDomain, &created, &dns); err != nil {
		return store.Cluster{}, err
	}
	c.CreatedAt = FromUnix(created)
	c.DNSNames = SplitDNSNames(dns)
	return c, nil
}

// ScanIntermediate reads a row of IntermediateColumns.
func ScanIntermediate(sc Scanner) (store.Intermediate, error) {
	var in store.Intermediate
	var nb, na int64
	err := sc.Scan(&in.Serial, &in.Cluster, &in.TrustDomain, &in.RootFingerprint, &nb, &na, &in.Fingerprint, &in.DER)
	if err != nil {
		return store.Intermediate{}, err
	}
	in.NotBefore, in.NotAfter = FromUnix(nb), FromUnix(na)
	return in, nil
}

// ScanRoot reads a row of RootColumns.
func ScanRoot(sc Scanner) (store.Root, error) {
	var r store.Root
	var added, activate int64
	if err := sc.Scan(&r.Fingerprint, &r.DER, &r.KeyRef, &added, &activate); err != nil {
		return store.Root{}, err
	}
	r.AddedAt, r.ActivateAt = FromUnix(added), FromUnix(activate)
	return r, nil
}

// selectQuery builds a SELECT with a WHERE of ANDed conditions, each added
// with its argument, and numbers the arguments with ph.
type selectQuery struct {
	ph    Placeholder
	where []string
	args  []any
}

// arg adds v as the next argument and returns its placeholder.
func (q *selectQuery) arg(v any) string {
	q.args = append(q.args, v)
	return q.ph(len(q.args))
}

// cond adds the condition column op v when set.
func (q *selectQuery) cond(set bool, column, op string, v any) {
	if set {
		q.where = append(q.where, column+" "+op+" "+q.arg(v))
	}
}

// activeAt adds the conditions not_before <= t <= not_after for a non-zero t.
// Whole stored seconds against a possibly fractional instant: nb <= t iff
// nb <= floor(t), na >= t iff na >= ceil(t).
func (q *selectQuery) activeAt(t time.Time) {
	q.cond(!t.IsZero(), "not_before", "<=", t.Unix())
	q.cond(!t.IsZero(), "not_after", ">=", UnixCeil(t))
}

// text is "SELECT columns FROM table [WHERE ...] ORDER BY order".
func (q *selectQuery) text(columns, table, order string) string {
	var b strings.Builder
	b.WriteString(`SELECT ` + columns + ` FROM ` + table)
	if len(q.where) > 0 {
		b.WriteString(" WHERE " + strings.Join(q.where, " AND "))
	}
	b.WriteString(" ORDER BY " + order)
	return b.String()
}

// CertificatesQuery is the query of the certificates matching f, newest
// first (NotBefore descending, then Serial ascending), and its arguments.
// f.Limit must not be negative.
func CertificatesQuery(f store.CertificateFilter, ph Placeholder) (string, []any) {
	q := selectQuery{ph: ph}
	q.cond(f.SPIFFEID != "", "spiffe_id", "=", f.SPIFFEID)
	q.cond(f.Cluster != "", "cluster", "=", f.Cluster)
	q.activeAt(f.ActiveAt)
	text := q.text(CertColumns, "certificates", "not_before DESC, serial ASC")
	if f.Limit > 0 {
		text += " LIMIT " + q.arg(f.Limit)
	}
	return text, q.args
}

// IntermediatesQuery is the query of the intermediates matching f by
// NotBefore ascending, then Serial, and its arguments.
func IntermediatesQuery(f store.IntermediateFilter, ph Placeholder) (string, []any) {
	q := selectQuery{ph: ph}
	q.cond(f.Cluster != "", "cluster", "=", f.Cluster)
	q.cond(f.RootFingerprint != "", "root_fingerprint", "=", f.RootFingerprint)
	q.activeAt(f.ActiveAt)
	return q.text(IntermediateColumns, "intermediates", "not_before ASC, serial ASC"), q.args
}

// EventsQuery is the query of the audit events with Time >= since (all of
// them for a zero since) in sequence order, and its arguments.
func EventsQuery(since time.Time, ph Placeholder) (string, []any) {
	q := selectQuery{ph: ph}
	q.cond(!since.IsZero(), "time", ">=", UnixCeil(since))
	return q.text(EventColumns, "audit_events", "seq"), q.args
}

// PruneChunk is the most rows one prune DELETE removes, so that pruning a
// large backlog never holds a lock, or one long transaction, for long.
const PruneChunk = 5000

// PruneSQL deletes up to PruneChunk certificates expired before a cutoff:
// its two arguments are the cutoff (whole seconds) and PruneChunk.
func PruneSQL(ph Placeholder) string {
	return `DELETE FROM certificates WHERE serial IN (
			SELECT serial FROM certificates WHERE not_after < ` + ph(1) + ` LIMIT ` + ph(2) + `)`
}

// Prune calls deleteChunk(ctx, cutoff, PruneChunk), each call its own
// transaction, until a chunk deletes fewer than PruneChunk rows, and returns
// how many rows were deleted in all (also when a chunk fails). cutoff is
// expiredBefore in whole seconds: na < t iff na < ceil(t). Every chunk
// removes rows that no write adds back (a certificate is recorded when
// issued, not after it expired), so this ends.
func Prune(ctx context.Context, expiredBefore time.Time, deleteChunk func(ctx context.Context, cutoff, limit int64) (int64, error)) (int64, error) {
	cutoff := UnixCeil(expiredBefore)
	var total int64
	for {
		n, err := deleteChunk(ctx, cutoff, PruneChunk)
		if err != nil {
			return total, err
		}
		total += n
		if n < PruneChunk {
			return total, nil
		}
	}
}

// Question is the SQLite placeholder.
func Question(int) string { return "?" }

// Dollar is the PostgreSQL placeholder.
func Dollar(n int) string { return "$" + strconv.Itoa(n) }

// JoinDNSNames is the dns_names column of a cluster: its names separated
// by spaces, which no DNS name contains.
func JoinDNSNames(names []string) string { return strings.Join(names, " ") }

// SplitDNSNames reads the dns_names column; nil for none.
func SplitDNSNames(col string) []string {
	if f := strings.Fields(col); len(f) > 0 {
		return f
	}
	return nil
}
