package root

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// Root replicas. Several root servers may share one store when it is a
// ReplicaStore. The writes that must happen once — creating a root and
// signing the root CRLs — are done only by the replica that holds the
// store's leader lease: two replicas ticking together cannot both rotate,
// and a relying party never sees two CRLs of one root under one number, or
// a replica's CRL numbered below one another replica already published
// (bar the one tick a follower takes to read a newly stored CRL). The lease
// is tried at every re-evaluation, so when its holder stops or loses its
// store connection, another replica takes over at its next tick.

// errNotLeader is returned for a root creation on a replica that does not
// hold the leader lease.
var errNotLeader = fmt.Errorf("%w: this root server does not hold the leader lease of its store: "+
	"run it on the root server whose log says it took the lease", grpcx.ErrFailedPrecondition)

// leadLocked keeps or takes the leader lease and records in r.leader
// whether this replica holds it. Without a ReplicaStore it always does.
func (r *Root) leadLocked(ctx context.Context) bool {
	rs, ok := r.cfg.Store.(ReplicaStore)
	if !ok {
		r.leader = true
		r.service.setLeader(true)
		return true
	}
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if r.lease != nil {
		err := r.lease.Held(ctx)
		if err == nil {
			r.leader = true
			r.service.setLeader(true)
			return true
		}
		r.log.WarnContext(ctx, "lost the leader lease", "error", err)
		r.lease.Release()
		r.lease = nil
	}
	lease, ok, err := rs.TryLeader(ctx)
	switch {
	case err != nil:
		r.log.ErrorContext(ctx, "cannot take the leader lease; retrying at the next re-evaluation", "error", err)
	case ok:
		r.lease = lease
		r.log.InfoContext(ctx, "took the leader lease: this root server creates roots and signs root CRLs")
	}
	r.leader = r.lease != nil
	r.service.setLeader(r.leader)
	return r.leader
}

// releaseLease gives the leader lease up, if held.
func (r *Root) releaseLease() {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if r.lease != nil {
		r.lease.Release()
		r.lease = nil
	}
}

// loadStoredCRLsLocked reads the root CRLs the leader stored into
// r.storedCRLs. Without a ReplicaStore there are none.
func (r *Root) loadStoredCRLsLocked(ctx context.Context) error {
	rs, ok := r.cfg.Store.(ReplicaStore)
	if !ok {
		return nil
	}
	rows, err := rs.RootCRLs(ctx)
	if err != nil {
		return fmt.Errorf("%w: list root CRLs: %w", grpcx.ErrUnavailable, err)
	}
	stored := make(map[string]store.RootCRL, len(rows))
	for _, c := range rows {
		stored[c.RootFingerprint] = c
	}
	r.storedCRLs = stored
	return nil
}

// storedCRL returns the stored CRL of root s when it verifies under s, nil
// otherwise.
func (r *Root) storedCRL(ctx context.Context, s RootStatus) *rootCRL {
	row, ok := r.storedCRLs[fingerprintHex(s.Cert)]
	if !ok {
		return nil
	}
	c, err := parseRootCRL(row.DER, s.RootRecord)
	if err != nil {
		r.log.ErrorContext(ctx, "ignoring a stored root CRL", "sha256", row.RootFingerprint, "error", err)
		return nil
	}
	return c
}

// parseRootCRL parses a root CRL signed by rec's root; under an upstream
// PKI it carries the chain from that root to the anchor.
func parseRootCRL(der []byte, rec RootRecord) (*rootCRL, error) {
	root := rec.Cert
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	if err := rl.CheckSignatureFrom(root); err != nil {
		return nil, err
	}
	if rl.Number == nil || rl.Number.Sign() <= 0 {
		return nil, errors.New("no CRL number")
	}
	serials := make([]string, 0, len(rl.RevokedCertificateEntries))
	for _, e := range rl.RevokedCertificateEntries {
		serials = append(serials, trust.SerialHex(e.SerialNumber))
	}
	slices.Sort(serials)
	var chain [][]byte
	if rec.Anchor != nil {
		chain = rawChain(append([]*x509.Certificate{rec.Cert}, rec.Chain...))
	}
	return &rootCRL{
		crl: trust.CRL{DER: der, IssuerChain: chain}, number: rl.Number, serials: strings.Join(serials, ","),
		renewAt: rl.ThisUpdate.Add(rl.NextUpdate.Sub(rl.ThisUpdate) / 2), nextUpdate: rl.NextUpdate,
	}, nil
}

// storeRootCRL stores c as root s's CRL, when the store is a ReplicaStore.
func (r *Root) storeRootCRL(ctx context.Context, s RootStatus, c *rootCRL) error {
	rs, ok := r.cfg.Store.(ReplicaStore)
	if !ok {
		return nil
	}
	if !c.number.IsInt64() {
		return fmt.Errorf("CRL number %s does not fit the store", c.number)
	}
	err := rs.PutRootCRL(ctx, store.RootCRL{RootFingerprint: fingerprintHex(s.Cert), Number: c.number.Int64(), DER: c.crl.DER})
	if err != nil {
		return fmt.Errorf("%w: store root CRL: %w", grpcx.ErrUnavailable, err)
	}
	return nil
}

// newerCRL returns whichever of a and b (either may be nil) has the higher
// number.
func newerCRL(a, b *rootCRL) *rootCRL {
	if a == nil || (b != nil && b.number.Cmp(a.number) > 0) {
		return b
	}
	return a
}

// nextCRLNumber is the number of a CRL signed at now after old (nil: none):
// now in Unix milliseconds, or one more than old's number if that is
// higher.
func nextCRLNumber(old *rootCRL, now time.Time) *big.Int {
	n := big.NewInt(now.UnixMilli())
	if old != nil && old.number.Cmp(n) >= 0 {
		n = new(big.Int).Add(old.number, big.NewInt(1))
	}
	return n
}
