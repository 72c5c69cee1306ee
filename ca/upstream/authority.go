package upstream

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/rotation"
)

// ErrRefused means the upstream answered and refused the request: an HTTP
// 4xx from step-ca (a lifetime over the provisioner's maximum, a policy),
// or a Cloud CAS status saying the caller may not do this. Retrying does
// not help until the upstream's configuration changes.
var ErrRefused = errors.New("refused by the upstream")

// ErrBadCertificate means the upstream answered with something that cannot
// serve as meshca's CA certificate; Issue returns nothing then.
var ErrBadCertificate = errors.New("upstream returned an unusable CA certificate")

// Service is the part of smallstep's apiv1.CertificateAuthorityService and
// apiv1.CertificateAuthorityGetter that Authority uses. Its calls take no
// context: Authority runs them in a goroutine of their own and stops
// waiting when its context ends.
type Service interface {
	CreateCertificate(req *apiv1.CreateCertificateRequest) (*apiv1.CreateCertificateResponse, error)
	GetCertificateAuthority(req *apiv1.GetCertificateAuthorityRequest) (*apiv1.GetCertificateAuthorityResponse, error)
}

// Authority obtains CA certificates from one upstream. It is safe for
// concurrent use.
type Authority struct {
	svc Service
	ttl time.Duration
	typ string
}

// New connects to the upstream cfg names. It reads the key, password and
// certificate files cfg names, and may reach the upstream (stepcas fetches
// step-ca's provisioner list when the JWK key is step-ca's). Call
// cfg.Validate first; New fails on an invalid or empty cfg.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var (
		svc Service
		err error
	)
	switch cfg.Type {
	case TypeStepCAS:
		svc, err = newStepCAS(ctx, cfg.StepCAS)
	case TypeCloudCAS:
		svc, err = newCloudCAS(ctx, cfg.CloudCAS)
	case TypeVaultPKI:
		svc, err = newVaultPKI(ctx, cfg.VaultPKI)
	default:
		return nil, errors.New("upstream: no upstream configured")
	}
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w: %w", cfg.Type, grpcx.ErrUnavailable, err)
	}
	return newAuthority(svc, cfg.Type, cfg.TTL), nil
}

// newAuthority wraps an already constructed service; typ names it
// in errors and ttl is as Config.TTL (zero: DefaultTTL).
func newAuthority(svc Service, typ string, ttl time.Duration) *Authority {
	return &Authority{svc: svc, ttl: cmp.Or(ttl, DefaultTTL), typ: typ}
}

// Close releases what the upstream's client holds (a Vault token's
// renewal); Issue must not be called after it.
func (a *Authority) Close() error {
	if c, ok := a.svc.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Request asks for a CA certificate for a key meshca holds.
type Request struct {
	// Signer holds the CA key; only its public key and a CSR signature
	// leave the process. Required.
	Signer crypto.Signer
	// CommonName of the CA; empty means "meshca CA".
	CommonName string
	// Now is the time the answer is checked at; zero means time.Now().
	Now time.Time
}

// Issued is a CA certificate from the upstream and what it chains to.
type Issued struct {
	// Certificate is meshca's CA certificate, for the requested key.
	Certificate *x509.Certificate
	// Chain holds the upstream's intermediates above Certificate, nearest
	// first, without the root; empty when the upstream root signed it.
	Chain []*x509.Certificate
	// Root is the upstream's self-signed root: the trust anchor.
	Root *x509.Certificate
}

// maxPathLen is meshca's CA certificate's path length constraint: one CA
// (a cluster intermediate) below it.
const maxPathLen = 1

// Issue makes a CSR with req.Signer, has the upstream sign a CA
// certificate for it, and returns it after the checks the package
// documentation lists. Failing to reach the upstream is grpcx.ErrUnavailable,
// a refusal ErrRefused, an unusable answer ErrBadCertificate.
func (a *Authority) Issue(ctx context.Context, req Request) (*Issued, error) {
	if req.Signer == nil {
		return nil, errors.New("upstream: signer is required")
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	subject := pkix.Name{CommonName: cmp.Or(req.CommonName, "meshca CA"), Organization: []string{"meshca"}}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, req.Signer)
	if err != nil {
		return nil, fmt.Errorf("upstream: csr: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("upstream: csr: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject: subject, PublicKey: req.Signer.Public(),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: maxPathLen,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	resp, err := call(ctx, func() (*apiv1.CreateCertificateResponse, error) {
		return a.svc.CreateCertificate(&apiv1.CreateCertificateRequest{Template: tmpl, CSR: csr, Lifetime: a.ttl})
	})
	if err != nil {
		return nil, fmt.Errorf("upstream %s: sign: %w: %w", a.typ, classify(err), err)
	}
	ca, err := call(ctx, func() (*apiv1.GetCertificateAuthorityResponse, error) {
		return a.svc.GetCertificateAuthority(&apiv1.GetCertificateAuthorityRequest{})
	})
	if err != nil {
		return nil, fmt.Errorf("upstream %s: root: %w: %w", a.typ, classify(err), err)
	}
	if resp == nil || resp.Certificate == nil || ca == nil || ca.RootCertificate == nil {
		return nil, fmt.Errorf("upstream %s: %w: empty answer", a.typ, ErrBadCertificate)
	}
	issued := &Issued{Certificate: resp.Certificate, Root: ca.RootCertificate}
	for _, c := range resp.CertificateChain {
		if c != nil && !c.Equal(ca.RootCertificate) {
			issued.Chain = append(issued.Chain, c)
		}
	}
	if err := Check(issued, req.Signer.Public(), now); err != nil {
		return nil, fmt.Errorf("upstream %s: %w", a.typ, err)
	}
	return issued, nil
}

// classify tells a refusal (ErrRefused) from a failure to get an answer
// (grpcx.ErrUnavailable, also for a context that ended).
func classify(err error) error {
	var httpErr interface{ StatusCode() int }
	if errors.As(err, &httpErr) && httpErr.StatusCode() >= 400 && httpErr.StatusCode() < 500 {
		return ErrRefused
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.PermissionDenied, codes.FailedPrecondition, codes.NotFound, codes.OutOfRange:
			return ErrRefused
		}
	}
	return grpcx.ErrUnavailable
}

// call runs f and waits for it or for ctx, whichever ends first; f keeps
// running after ctx ends (its result is dropped).
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Check reports why in cannot serve as meshca's CA certificate for pub at
// now, wrapping ErrBadCertificate, or returns nil: in.Certificate is a CA
// for pub that may sign certificates and one CA below it, has at least
// MinTTL left, and verifies through in.Chain to the self-signed in.Root,
// every upstream CA allowing the CAs below it (meshca's CA and a cluster
// intermediate).
func Check(in *Issued, pub crypto.PublicKey, now time.Time) error {
	c := in.Certificate
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadCertificate, fmt.Sprintf(format, args...))
	}
	type publicKey interface{ Equal(crypto.PublicKey) bool }
	switch k, ok := pub.(publicKey); {
	case !ok || !k.Equal(c.PublicKey):
		return bad("certificate %q is not for meshca's key", c.Subject)
	case !c.IsCA || !c.BasicConstraintsValid:
		return bad("certificate %q is not a CA certificate; the upstream must issue CA certificates (basicConstraints isCA)", c.Subject)
	case c.KeyUsage&x509.KeyUsageCertSign == 0:
		return bad("certificate %q may not sign certificates (keyUsage certSign)", c.Subject)
	case c.MaxPathLenZero || (c.MaxPathLen >= 0 && c.MaxPathLen < maxPathLen):
		return bad("certificate %q has path length 0; meshca's CA needs at least %d for the cluster intermediates", c.Subject, maxPathLen)
	case c.NotAfter.Sub(now) < MinTTL:
		return bad("certificate %q expires at %s, less than %v after now", c.Subject, c.NotAfter.UTC().Format(time.RFC3339), MinTTL)
	}
	if err := in.Root.CheckSignatureFrom(in.Root); err != nil || !bytes.Equal(in.Root.RawIssuer, in.Root.RawSubject) {
		return bad("upstream root %q is not self-signed", in.Root.Subject)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(in.Root)
	for _, ic := range in.Chain {
		inters.AddCert(ic)
	}
	chains, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return bad("certificate %q does not chain to the upstream root: %v", c.Subject, err)
	}
	// chains[0] is meshca's CA, the upstream CAs above it, the root. The
	// CA at position i has i CAs of the chain below it, plus the cluster
	// intermediate under meshca's CA.
	for i, up := range chains[0][1:] {
		below := i + 2
		if up.MaxPathLenZero || (up.MaxPathLen >= 0 && up.MaxPathLen < below) {
			return bad("upstream CA %q allows path length %d, but %d CAs sit below it (meshca's CA and the cluster intermediates)",
				up.Subject, up.MaxPathLen, below)
		}
	}
	return nil
}

// readPassword reads a password file, without its trailing newline.
func readPassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// RenewalError classifies err, from Issue or Check, for a loop that
// renews meshca's CA certificate (rotation.RetryDelay): a refusal or an
// unusable answer wraps rotation.ErrRefused and grpcx.ErrFailedPrecondition
// (the operator must change the upstream's configuration or meshca's),
// anything else grpcx.ErrUnavailable (retry with backoff).
func RenewalError(err error) error {
	switch {
	case errors.Is(err, ErrRefused), errors.Is(err, ErrBadCertificate):
		return fmt.Errorf("%w: %w: %w", grpcx.ErrFailedPrecondition, rotation.ErrRefused, err)
	case !errors.Is(err, grpcx.ErrUnavailable):
		return fmt.Errorf("%w: %w", grpcx.ErrUnavailable, err)
	}
	return err
}
