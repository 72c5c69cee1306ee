package root

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// CRLs in the bundle. Every own trust domain's entry carries the root CRLs
// (one per in-bundle root whose key loads, listing every revoked
// intermediate) followed by the CRLs the issuers of the clusters in that
// trust domain published, so that every cluster's agents receive every
// cluster's CRLs. CRLs are outside the bundle signature, but a change still
// publishes a new, signed bundle with a new sequence.

// maxCRLsPerCall bounds the CRLs of one PublishCRLs call: an issuer has a
// handful of intermediates at a time.
const maxCRLsPerCall = 32

// rootCRL is a CRL signed by one root.
type rootCRL struct {
	crl    trust.CRL
	number *big.Int
	// serials is the revoked set it lists, as a sorted, joined key.
	serials string
	// renewAt is half-way to NextUpdate; nextUpdate is when it goes stale.
	renewAt, nextUpdate time.Time
}

// issuerCRL is a CRL an issuer published, verified when it came in.
type issuerCRL struct {
	crl         trust.CRL
	number      *big.Int
	cluster     string
	trustDomain spiffeid.TrustDomain
	// serial is the serial of the intermediate that signed it; the key of
	// Root.issuerCRLs.
	serial                     string
	issuerNotAfter, nextUpdate time.Time
}

// signRootCRLsLocked keeps one CRL per in-bundle root valid at now listing
// the revoked intermediates and the other certificates revoked by serial
// (a serial is random, so listing one on a root that did not sign it is
// harmless): signed when missing, when the list or the
// roots change, and at half-life. It exists, empty, while nothing is
// revoked: a relying party that checks CRLs for every CA of a chain (Envoy,
// once it has any CRL) must find one for the root too. A root whose key
// cannot be loaded or that fails to sign keeps its previous CRL while that
// is still current. With a ReplicaStore only the leader signs, and stores
// what it signed; a follower publishes the stored CRLs (see leader.go).
func (r *Root) signRootCRLsLocked(ctx context.Context, now time.Time) {
	serials := make([]string, 0, len(r.revs.inters)+len(r.revs.serials))
	for s := range r.revs.inters {
		serials = append(serials, s)
	}
	for s := range r.revs.serials {
		serials = append(serials, s)
	}
	slices.Sort(serials)
	serials = slices.Compact(serials)
	key := strings.Join(serials, ",")
	keep := map[[32]byte]*rootCRL{}
	defer func() {
		r.rootCRLs = keep
		r.service.setRootCRLs(keep)
	}()
	for _, s := range r.statuses {
		if !s.State.InBundle() || now.Before(s.Cert.NotBefore) || !now.Before(s.Cert.NotAfter) {
			continue
		}
		fp := trust.Fingerprint(s.Cert)
		if !ca.MaySignCRLs(s.Cert) {
			// An adopted root, istiod's: its key usage lacks CRL signing.
			if r.crlErrs[fp] == "" {
				r.crlErrs[fp] = "no CRL signing"
				r.log.InfoContext(ctx, "this root's key usage does not allow signing CRLs; no root CRL for it", "sha256", fingerprintHex(s.Cert))
			}
			continue
		}
		old := newerCRL(r.rootCRLs[fp], r.storedCRL(ctx, s))
		if !r.leader {
			// The leader signs; a follower publishes what it stored.
			if old != nil && now.Before(old.nextUpdate) {
				keep[fp] = old
			}
			continue
		}
		if old != nil && old.serials == key && now.Before(old.renewAt) {
			keep[fp] = old
			continue
		}
		c, err := r.signRootCRL(ctx, s, serials, old, now)
		if err == nil {
			err = r.storeRootCRL(ctx, s, c)
		}
		if err == nil {
			c.serials = key
			keep[fp] = c
			delete(r.crlErrs, fp)
			r.log.InfoContext(ctx, "root CRL signed", "sha256", fingerprintHex(s.Cert), "number", c.number.String(),
				"revoked_intermediates", len(serials), "next_update", c.nextUpdate)
			continue
		}
		if old != nil && now.Before(old.nextUpdate) {
			keep[fp] = old
		}
		if r.crlErrs[fp] != err.Error() {
			r.crlErrs[fp] = err.Error()
			r.log.ErrorContext(ctx, "cannot sign the root CRL; retrying at the next re-evaluation",
				"sha256", fingerprintHex(s.Cert), "keeping_previous", keep[fp] != nil, "error", err)
		}
	}
}

func (r *Root) signRootCRL(ctx context.Context, s RootStatus, serials []string, old *rootCRL, now time.Time) (*rootCRL, error) {
	key, err := r.signer(ctx, s.KeyRef)
	if err != nil {
		return nil, err
	}
	a, err := ca.NewAuthority(s.Cert, key, s.Chain...)
	if err != nil {
		return nil, fmt.Errorf("root authority: %w", err)
	}
	req := ca.CRLRequest{Number: nextCRLNumber(old, now), Now: now, Validity: r.cfg.CRLValidity}
	for _, hexSerial := range serials {
		n, ok := new(big.Int).SetString(hexSerial, 16)
		if !ok {
			return nil, fmt.Errorf("revoked intermediate serial %q is not hexadecimal", hexSerial)
		}
		req.Serials = append(req.Serials, n)
	}
	crl, rl, err := a.SignCRL(req)
	if err != nil {
		return nil, fmt.Errorf("%w: sign root CRL: %w", grpcx.ErrUnavailable, err)
	}
	return &rootCRL{
		crl: crl, number: rl.Number, nextUpdate: rl.NextUpdate,
		renewAt: now.Add(rl.NextUpdate.Sub(now) / 2),
	}, nil
}

// pruneIssuerCRLsLocked drops the published CRLs that went stale, whose
// issuer expired, or whose cluster or issuer is revoked.
func (r *Root) pruneIssuerCRLsLocked(ctx context.Context, now time.Time) {
	for k, c := range r.issuerCRLs {
		var why string
		switch {
		case !now.Before(c.nextUpdate):
			why = "next update passed"
		case !now.Before(c.issuerNotAfter):
			why = "issuer expired"
		default:
			why = r.revs.revokedIssuer(c.cluster, c.serial)
		}
		if why == "" {
			continue
		}
		delete(r.issuerCRLs, k)
		r.log.InfoContext(ctx, "dropped a published CRL", "cluster", c.cluster, "serial", c.serial,
			"number", c.number.String(), "reason", why)
	}
}

// domainCRLsLocked returns the CRLs of own trust domain td: the root CRLs,
// oldest root first, then the issuer CRLs of td by issuer serial.
func (r *Root) domainCRLsLocked(td spiffeid.TrustDomain) []trust.CRL {
	var out []trust.CRL
	for _, s := range r.statuses {
		if c := r.rootCRLs[trust.Fingerprint(s.Cert)]; c != nil {
			out = append(out, c.crl)
		}
	}
	var issued []issuerCRL
	for _, c := range r.issuerCRLs {
		if c.trustDomain == td {
			issued = append(issued, c)
		}
	}
	slices.SortFunc(issued, func(a, b issuerCRL) int { return cmp.Compare(a.serial, b.serial) })
	for _, c := range issued {
		out = append(out, c.crl)
	}
	return out
}

// publishCRLs answers RootService.PublishCRLs. Every CRL must verify under
// the in-bundle roots and be signed by an intermediate of the caller's
// cluster, and every JWT authority must verify under them with its
// certificate issued by such an intermediate (jwtauthorities.go);
// otherwise the whole call is refused. A CRL that went stale or whose
// issuer expired is skipped, and one whose CRL number is not above the
// kept one of its issuer is ignored. Accepted CRLs and JWT authorities are
// also stored for the other root replicas (issuercrls.go). A call that
// would have the root hold more of the cluster's CRLs or JWT authorities
// than its limit (heldcap.go) is refused with FailedPrecondition.
func (r *Root) publishCRLs(ctx context.Context, req *meshcav1.PublishCRLsRequest) (*meshcav1.PublishCRLsResponse, error) {
	st := r.state.Load()
	caller, err := r.authenticate(ctx, st, useCredential)
	if err != nil {
		return nil, err
	}
	c := caller.cluster
	if st.revoked[c.Name] {
		return nil, revokedError(c.Name)
	}
	if n := len(req.GetCrls()); n > maxCRLsPerCall {
		return nil, fmt.Errorf("%w: %d CRLs in one call (at most %d)", grpcx.ErrInvalidArgument, n, maxCRLsPerCall)
	}
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: trust domain: %w", c.Name, err)
	}
	now := r.cfg.Now()
	var roots []*x509.Certificate
	for _, s := range st.statuses {
		if s.State.InBundle() {
			roots = append(roots, s.Cert)
		}
	}
	pool, err := trust.NewBundle(roots...)
	if err != nil {
		return nil, fmt.Errorf("%w: in-bundle roots: %w", errNoActiveRoot, err)
	}
	inters, err := r.cfg.Store.Intermediates(ctx, store.IntermediateFilter{Cluster: c.Name})
	if err != nil {
		return nil, fmt.Errorf("%w: list intermediates of cluster %s: %w", grpcx.ErrUnavailable, c.Name, err)
	}
	in, err := checkIssuerCRLs(req.GetCrls(), c.Name, td, pool, inters, now)
	if err != nil {
		return nil, err
	}
	jwts, err := checkJWTAuthorities(req.GetJwtAuthorities(), c, td, pool, inters, now)
	if err != nil {
		r.refuseJWTAuthorities(ctx, caller, err)
		return nil, err
	}
	limit, err := r.heldLimit(ctx, c, now)
	if err != nil {
		return nil, err
	}
	if err := r.acceptPublished(ctx, c.Name, in, jwts, limit, now); err != nil {
		return nil, err
	}
	r.storeIssuerCRLs(ctx, in)
	r.storeJWTAuthorities(ctx, jwts)
	return &meshcav1.PublishCRLsResponse{}, nil
}

// acceptPublished keeps the verified CRLs and JWT authorities of a
// PublishCRLs call of cluster and publishes a new bundle if any is new. A
// call that would take the cluster past limit (heldcap.go) changes
// nothing.
func (r *Root) acceptPublished(ctx context.Context, cluster string, in []issuerCRL, jwts []jwtAuthority, limit int, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.checkHeldLocked(cluster, in, jwts, limit, now); err != nil {
		return err
	}
	changed, newKeys := 0, 0
	for _, got := range in {
		if old, ok := r.issuerCRLs[got.serial]; ok && got.number.Cmp(old.number) <= 0 {
			continue
		}
		r.issuerCRLs[got.serial] = got
		changed++
	}
	for _, a := range jwts {
		if r.addJWTAuthorityLocked(a) {
			newKeys++
		}
	}
	if changed > 0 || newKeys > 0 {
		r.log.InfoContext(ctx, "issuer CRLs and JWT authorities published", "cluster", cluster, "new", changed,
			"received", len(in), "new_jwt_authorities", newKeys, "received_jwt_authorities", len(jwts))
		r.publishLocked(ctx, now)
	}
	return nil
}

// checkIssuerCRLs verifies the CRLs of a PublishCRLs call by cluster of
// trust domain td and returns those to keep; one bad CRL fails them all.
func checkIssuerCRLs(crls []*meshcav1.CRL, cluster string, td spiffeid.TrustDomain, pool *trust.Bundle,
	inters []store.Intermediate, now time.Time) ([]issuerCRL, error) {
	var in []issuerCRL
	for i, p := range crls {
		crl := trust.CRL{DER: bytes.Clone(p.GetDer())}
		for _, der := range p.GetIssuerChain() {
			crl.IssuerChain = append(crl.IssuerChain, bytes.Clone(der))
		}
		got, ok, err := checkIssuerCRL(crl, pool, inters, cluster, now)
		if err != nil {
			return nil, fmt.Errorf("crl %d: %w", i, err)
		}
		if ok {
			got.trustDomain = td
			in = append(in, got)
		}
	}
	return in, nil
}

// checkIssuerCRL verifies one published CRL: ok is false when it is to be
// skipped (stale, or its issuer expired).
func checkIssuerCRL(crl trust.CRL, roots *trust.Bundle, inters []store.Intermediate, cluster string, now time.Time) (issuerCRL, bool, error) {
	rl, issuer, err := trust.VerifyCRL(crl, roots, now)
	switch {
	case errors.Is(err, trust.ErrCRLStale):
		return issuerCRL{}, false, nil
	case err != nil && len(crl.IssuerChain) > 0:
		if c, perr := x509.ParseCertificate(crl.IssuerChain[0]); perr == nil && !now.Before(c.NotAfter) {
			return issuerCRL{}, false, nil
		}
		return issuerCRL{}, false, fmt.Errorf("%w: %w", grpcx.ErrInvalidArgument, err)
	case err != nil:
		return issuerCRL{}, false, fmt.Errorf("%w: %w", grpcx.ErrInvalidArgument, err)
	case rl.Number == nil || rl.Number.Sign() <= 0:
		return issuerCRL{}, false, fmt.Errorf("%w: no CRL number", grpcx.ErrInvalidArgument)
	}
	sum := sha256.Sum256(issuer.Raw)
	fp, serial := hex.EncodeToString(sum[:]), trust.SerialHex(issuer.SerialNumber)
	i := slices.IndexFunc(inters, func(in store.Intermediate) bool { return in.Serial == serial && in.Fingerprint == fp })
	if i < 0 {
		return issuerCRL{}, false, fmt.Errorf("%w: the CRL's issuer (serial %s, %q) is not an intermediate of cluster %s",
			grpcx.ErrPermissionDenied, serial, issuer.Subject.CommonName, cluster)
	}
	return issuerCRL{
		crl: crl, number: rl.Number, cluster: cluster, serial: serial,
		issuerNotAfter: issuer.NotAfter, nextUpdate: rl.NextUpdate,
	}, true, nil
}
