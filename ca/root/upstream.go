package root

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// Upstream issues meshca's CA certificates from an upstream PKI for keys
// the root holds; *upstream.Authority is one. Issue checks its answer
// (upstream.Check); the root checks it again before recording it.
type Upstream interface {
	Issue(ctx context.Context, req upstream.Request) (*upstream.Issued, error)
}

var _ Upstream = (*upstream.Authority)(nil)

// upstreamRetry is the state of failed automatic renewals under an
// upstream PKI: the next attempt waits until at.
type upstreamRetry struct {
	failures int
	at       time.Time
}

// pendingKey is a key created for a CA certificate the upstream has not
// issued yet; the next attempt uses it again instead of creating another.
type pendingKey struct {
	ref    string
	signer crypto.Signer
}

// newCACert makes the CA certificate of a new root for signer at now: a
// self-signed root, or one the upstream issues (Config.Upstream), checked
// with upstream.Check. An upstream's refusal or unusable answer wraps
// grpcx.ErrFailedPrecondition and rotation.ErrRefused (the operator must
// change the upstream's configuration); failing to reach it wraps
// grpcx.ErrUnavailable.
func (r *Root) newCACert(ctx context.Context, signer crypto.Signer, now time.Time) (RootRecord, error) {
	if r.cfg.Upstream == nil {
		root, err := ca.NewRoot(ca.RootConfig{Signer: signer, CommonName: r.cfg.RootCommonName, TTL: r.cfg.RootTTL, Now: now})
		if err != nil {
			return RootRecord{}, fmt.Errorf("%w: new root: %w", grpcx.ErrUnavailable, err)
		}
		if err := verifySelfSigned(root.Certificate, now); err != nil {
			return RootRecord{}, err
		}
		return RootRecord{Cert: root.Certificate}, nil
	}
	in, err := r.cfg.Upstream.Issue(ctx, upstream.Request{Signer: signer, CommonName: r.cfg.RootCommonName, Now: now})
	if err == nil {
		err = upstream.Check(in, signer.Public(), now)
	}
	if err != nil {
		return RootRecord{}, fmt.Errorf("CA certificate from the upstream: %w", upstream.RenewalError(err))
	}
	return RootRecord{Cert: in.Certificate, Chain: in.Chain, Anchor: in.Root}, nil
}

// newRootKeyLocked returns the key of the next root: the one an earlier,
// failed attempt created, or a new one.
func (r *Root) newRootKeyLocked(ctx context.Context) (string, crypto.Signer, error) {
	if p := r.pendingKey; p != nil {
		return p.ref, p.signer, nil
	}
	ref, signer, err := r.cfg.Keys.NewKey(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("%w: new root key: %w", grpcx.ErrUnavailable, err)
	}
	signer = r.service.timed(signer)
	r.keysMu.Lock()
	r.signers[ref] = signer
	r.keysMu.Unlock()
	r.pendingKey = &pendingKey{ref: ref, signer: signer}
	return ref, signer, nil
}

// rootDER is what the store keeps of rec: its certificate, followed under
// an upstream PKI by the upstream's intermediates and root.
func rootDER(rec RootRecord) []byte {
	ders := [][]byte{rec.Cert.Raw}
	if rec.Anchor != nil {
		for _, c := range rec.Chain {
			ders = append(ders, c.Raw)
		}
		ders = append(ders, rec.Anchor.Raw)
	}
	for _, c := range rec.Cross {
		ders = append(ders, c.Raw)
	}
	return store.JoinDER(ders)
}

// parseRootRow reads a stored root: a self-signed certificate followed by
// the cross certificates between it and the roots before it, or a
// certificate issued by an upstream PKI followed by the upstream's
// intermediates and its root (no cross certificates: every meshca CA
// under an upstream chains to the same anchor).
func parseRootRow(row store.Root) (RootRecord, error) {
	certs, err := x509.ParseCertificates(row.DER)
	switch {
	case err != nil:
		return RootRecord{}, fmt.Errorf("root %s: certificate: %w", row.Fingerprint, err)
	case len(certs) == 0:
		return RootRecord{}, fmt.Errorf("root %s: no certificate", row.Fingerprint)
	}
	rec := RootRecord{Cert: certs[0], KeyRef: row.KeyRef, AddedAt: row.AddedAt, ActivateAt: row.ActivateAt}
	rest := certs[1:]
	switch {
	case len(rest) == 0:
	case selfSigned(rec.Cert):
		rec.Cross = rest
	default:
		rec.Chain, rec.Anchor = rest[:len(rest)-1], rest[len(rest)-1]
	}
	return rec, nil
}

// selfSigned reports whether c names itself as issuer and its signature
// verifies with its own key.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// ownDomain is the part of every own trust domain's bundle that comes from
// the roots in the bundle: certs (meshca's CAs), the anchors they chain to
// and the upstream intermediates between them. Without an upstream PKI
// the anchors are certs and Authorities stays nil.
func ownDomain(certs, anchors, chain []*x509.Certificate) (trust.DomainBundle, error) {
	roots, err := trust.NewBundle(anchors...)
	if err != nil {
		return trust.DomainBundle{}, err
	}
	d := trust.DomainBundle{Roots: roots}
	if sameCerts(certs, anchors) {
		return d, nil
	}
	if d.Authorities, err = trust.NewBundle(certs...); err != nil {
		return trust.DomainBundle{}, err
	}
	for _, c := range chain {
		if !containsCert(d.UpstreamChain, c) {
			d.UpstreamChain = append(d.UpstreamChain, c)
		}
	}
	return d, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

func containsCert(set []*x509.Certificate, c *x509.Certificate) bool {
	for _, s := range set {
		if bytes.Equal(s.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// caChain returns the CAs above an intermediate a signs that a relying
// party holding only the trust anchor needs: a's certificate and its
// upstream chain under an upstream PKI, nothing for a self-signed root.
func caChain(a *ca.Authority) []*x509.Certificate {
	c := a.Certificate
	if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
		return nil
	}
	return append([]*x509.Certificate{c}, a.Chain...)
}

// autoRotate reports whether the root creates the next root by itself:
// when configured, and always under an upstream PKI, whose CA
// certificates live for weeks.
func (c Config) autoRotate() bool { return c.AutoRotate || c.Upstream != nil }

// rotationDue reports whether an automatic rotation may be attempted at
// now: not while a failed request to the upstream waits for its retry.
func (r *Root) rotationDue(now time.Time) bool {
	return r.cfg.Upstream == nil || !now.Before(r.upstreamRetry.at)
}

// rotationFailedLocked schedules the next attempt after a failed automatic
// rotation under an upstream PKI (rotation.CARetry: from Tick doubling up
// to an hour; an hour after a refusal) and logs it: the active CA keeps
// signing meanwhile.
func (r *Root) rotationFailedLocked(ctx context.Context, now time.Time, err error) {
	r.upstreamRetry.failures++
	delay, refused := rotation.RetryDelay(err, r.upstreamRetry.failures, rand.Float64(), rotation.CARetry(r.cfg.Tick))
	r.upstreamRetry.at = now.Add(delay)
	attrs := []any{"error", err.Error(), "failures", r.upstreamRetry.failures, "retry_in", delay.String()}
	if r.active != nil {
		attrs = append(attrs, "active_sha256", fingerprintHex(r.active.Certificate), "active_not_after", r.active.Certificate.NotAfter)
	}
	if refused {
		r.log.ErrorContext(ctx, "the upstream PKI refused meshca's next CA certificate: the operator must change the upstream's "+
			"configuration (provisioner template, maximum lifetime, policy) or meshca's upstream settings; the active CA keeps signing", attrs...)
		return
	}
	r.log.WarnContext(ctx, "renewing meshca's CA certificate from the upstream PKI failed; the active CA keeps signing, retrying", attrs...)
}

func rawChain(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}
