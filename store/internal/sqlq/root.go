package sqlq

import (
	"errors"

	"github.com/meshca/meshca/store"
)

// InsertJoinTokenSQL inserts an unused join token unless its hash is
// stored. Its arguments are the hash, cluster, expiry, creation time and
// replicas (at least 1).
func InsertJoinTokenSQL(ph Placeholder) string {
	return `INSERT INTO join_tokens (hash, cluster, expires_at, used_at, created_at, replicas)
			VALUES (` + ph(1) + `, ` + ph(2) + `, ` + ph(3) + `, 0, ` + ph(4) + `, ` + ph(5) + `)
			ON CONFLICT (hash) DO NOTHING`
}

// InsertIntermediateSQL inserts an intermediate unless its serial is
// recorded. Its arguments are IntermediateArgs.
func InsertIntermediateSQL(ph Placeholder) string {
	return `INSERT INTO intermediates (` + IntermediateColumns + `, created_at) VALUES (` + list(ph, 9) + `)
			ON CONFLICT (serial) DO NOTHING`
}

// IntermediateArgs are the arguments of InsertIntermediateSQL for in,
// recorded at the second createdAt.
func IntermediateArgs(in store.Intermediate, createdAt int64) []any {
	return []any{in.Serial, in.Cluster, in.TrustDomain, in.RootFingerprint, in.NotBefore.Unix(), in.NotAfter.Unix(),
		in.Fingerprint, in.DER, createdAt}
}

// CheckIntermediate refuses an intermediate without serial or certificate.
func CheckIntermediate(in store.Intermediate) error {
	if in.Serial == "" || len(in.DER) == 0 {
		return errors.New("empty serial or certificate")
	}
	return nil
}

// InsertRootSQL inserts a root unless its fingerprint is recorded. Its
// arguments are RootArgs.
func InsertRootSQL(ph Placeholder) string {
	return `INSERT INTO roots (` + RootColumns + `) VALUES (` + list(ph, 5) + `) ON CONFLICT (fingerprint) DO NOTHING`
}

// RootArgs are the arguments of InsertRootSQL for r.
func RootArgs(r store.Root) []any {
	return []any{r.Fingerprint, r.DER, r.KeyRef, r.AddedAt.Unix(), r.ActivateAt.Unix()}
}

// CheckRoot refuses a root without fingerprint or certificate.
func CheckRoot(r store.Root) error {
	if r.Fingerprint == "" || len(r.DER) == 0 {
		return errors.New("empty fingerprint or certificate")
	}
	return nil
}
