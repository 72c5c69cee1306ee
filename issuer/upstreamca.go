package issuer

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
)

// CARenewer obtains a new certificate for the key of a LocalRoot's CA from
// an upstream PKI (the stack's adapter of package ca/upstream). An error
// wrapping rotation.ErrRefused means the upstream refused or answered with
// something unusable: retrying soon does not help.
type CARenewer interface {
	RenewCA(ctx context.Context, now time.Time) (UpstreamCA, error)
}

// UpstreamCA is meshca's CA as an upstream PKI certified it.
type UpstreamCA struct {
	// CA is meshca's CA: the certificate the upstream issued, the key, and
	// the upstream's intermediates above it (Chain), without the root.
	CA *ca.Authority
	// Anchor is the upstream's self-signed root.
	Anchor *x509.Certificate
}

// CASource supplies a CA that may be renewed: a *LocalRoot (its current
// certificate), or FixedCA.
type CASource interface {
	// CA returns the current CA.
	CA() *ca.Authority
	// Changed returns a channel closed when CA changes; nil when it never
	// does.
	Changed() <-chan struct{}
}

// FixedCA is the CASource of a CA that never changes.
func FixedCA(a *ca.Authority) CASource { return fixedCA{a} }

type fixedCA struct{ a *ca.Authority }

func (f fixedCA) CA() *ca.Authority { return f.a }

func (fixedCA) Changed() <-chan struct{} { return nil }

var _ CASource = (*LocalRoot)(nil)

// renewAttemptTimeout bounds one request to the upstream.
const renewAttemptTimeout = time.Minute

// Run renews the root's certificate from the upstream PKI (Renewer) once
// less than a third of its life is left (rotation.CADueAt), for the same key
// and subject, until ctx is cancelled; then it returns nil. A failed
// renewal is logged and retried with backoff (rotation.CARetry) while the
// current root keeps signing intermediates. Each renewal replaces the
// bundle (Current). Without a Renewer it only waits for ctx. Call it once.
func (r *LocalRoot) Run(ctx context.Context) error {
	if r.cfg.Renewer == nil {
		<-ctx.Done()
		return nil
	}
	var (
		failures int
		retryAt  time.Time
	)
	for {
		st, _ := r.state.Load()
		at := rotation.CADueAt(caValidity(st.root))
		if retryAt.After(at) {
			at = retryAt
		}
		if wait := at.Sub(r.cfg.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min(wait, r.cfg.RenewBackoff)):
			}
			continue
		}
		err := r.renew(ctx, st)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			failures, retryAt = 0, time.Time{}
			continue
		}
		failures++
		delay, refused := rotation.RetryDelay(err, failures, rand.Float64(), rotation.CARetry(r.cfg.RenewBackoff))
		retryAt = r.cfg.Now().Add(delay)
		attrs := []any{"error", err.Error(), "failures", failures, "retry_in", delay.String(),
			"current_not_after", st.root.Certificate.NotAfter, "current_sha256", fingerprintHex(st.root.Certificate)}
		if refused {
			r.cfg.Logger.Error("the upstream PKI refused to renew meshca's CA certificate: the operator must change the upstream's "+
				"configuration or meshca's upstreamPKI settings; the current CA keeps signing", attrs...)
			continue
		}
		r.cfg.Logger.Warn("renewing meshca's CA certificate from the upstream PKI failed; the current CA keeps signing, retrying", attrs...)
	}
}

// renew obtains the next certificate of st's root and makes it current.
func (r *LocalRoot) renew(ctx context.Context, st localCA) error {
	actx, cancel := context.WithTimeout(ctx, renewAttemptTimeout)
	u, err := r.cfg.Renewer.RenewCA(actx, r.cfg.Now())
	cancel()
	if err != nil {
		return err
	}
	if err := sameCA(st.root, u.CA); err != nil {
		return fmt.Errorf("%w: %w", rotation.ErrRefused, err)
	}
	next, err := newLocalCA(r.cfg, u.CA, u.Anchor, r.cfg.Now())
	if err != nil {
		return fmt.Errorf("%w: %w", rotation.ErrRefused, err)
	}
	if r.cfg.Renewed != nil {
		r.cfg.Renewed(u)
	}
	r.state.Store(next)
	r.cfg.Logger.Info("renewed meshca's CA certificate from the upstream PKI", "sha256", fingerprintHex(u.CA.Certificate),
		"not_after", u.CA.Certificate.NotAfter, "renew_at", rotation.CADueAt(caValidity(u.CA)),
		"previous_sha256", fingerprintHex(st.root.Certificate), "anchor_sha256", fingerprintHex(u.Anchor))
	return nil
}

// sameCA refuses a renewed CA that the intermediates signed under cur
// would not chain to (another key or subject), or that does not outlive
// cur (an upstream that caps lifetimes at its own expiry).
func sameCA(cur, next *ca.Authority) error {
	c, n := cur.Certificate, next.Certificate
	switch {
	case next.Signer == nil || !bytes.Equal(c.RawSubjectPublicKeyInfo, n.RawSubjectPublicKeyInfo):
		return errors.New("the renewed CA certificate is not for meshca's CA key")
	case !bytes.Equal(c.RawSubject, n.RawSubject):
		return fmt.Errorf("the renewed CA certificate names %q, not %q: the upstream must keep the requested subject", n.Subject, c.Subject)
	case !n.NotAfter.After(c.NotAfter):
		return fmt.Errorf("the renewed CA certificate expires at %s, no later than the current one", n.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func caValidity(a *ca.Authority) rotation.Validity {
	return rotation.Validity{NotBefore: a.Certificate.NotBefore, NotAfter: a.Certificate.NotAfter}
}

func fingerprintHex(c *x509.Certificate) string {
	fp := trust.Fingerprint(c)
	return fmt.Sprintf("%x", fp[:])
}
