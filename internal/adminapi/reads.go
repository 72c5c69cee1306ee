package adminapi

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
)

// Limits of the list calls.
const (
	// DefaultListLimit caps a list when the request names no limit.
	DefaultListLimit = 1000
	// MaxListLimit is the largest limit a request may name.
	MaxListLimit = 10000
	// defaultAuditWindow is how far back ListAuditEvents looks when the
	// request names no since.
	defaultAuditWindow = time.Hour
)

// ReadStore is what Reads reads: the certificate records and the audit
// log. A store that also has Revocations (a store.RevocationStore) lets
// GetCertificate say what revokes a certificate and answers
// ListRevocations; one that has VerifyAuditHead answers VerifyAudit. Both
// store backends have all of them.
type ReadStore interface {
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
	Certificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error)
	AuditEvents(ctx context.Context, since time.Time) ([]store.AuditEvent, error)
}

// revocationLister is the optional capability of a ReadStore behind
// ListRevocations and GetCertificate's revoked field.
type revocationLister interface {
	Revocations(ctx context.Context, now time.Time) ([]store.Revocation, error)
}

// auditVerifier is the optional capability of a ReadStore behind
// VerifyAudit: it walks the whole chain and returns the head as far as it
// verified.
type auditVerifier interface {
	VerifyAuditHead(ctx context.Context) (store.ChainHead, error)
}

// Reads answers the store-backed read calls of meshcav1.AdminServiceServer
// (ListCertificates, GetCertificate, ListRevocations, ListAuditEvents,
// VerifyAudit), the same on the root and on the issuers. Every other call
// is Unimplemented: a server embeds *Reads (and not
// meshcav1.UnimplementedAdminServiceServer, which Reads already embeds, so
// that the read methods are not ambiguous) and defines the calls it
// answers itself, which take precedence.
//
// Errors come back as gRPC statuses (see Status). It is safe for
// concurrent use.
type Reads struct {
	meshcav1.UnimplementedAdminServiceServer
	st  ReadStore
	now func() time.Time
	log *slog.Logger
}

// NewReads returns the read calls over st. now is the serving component's
// clock (nil means time.Now), the one its store stamps rows with, so that
// "active now" and the audit window agree with them; log receives one line
// per failed call (nil means slog.Default()).
func NewReads(st ReadStore, now func() time.Time, log *slog.Logger) *Reads {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Reads{st: st, now: now, log: log}
}

// ListCertificates implements meshcav1.AdminServiceServer: the
// certificates matching the request's SPIFFE ID, cluster and (with active)
// validity now, newest first, at most limit (zero means DefaultListLimit).
func (r *Reads) ListCertificates(ctx context.Context, req *meshcav1.ListCertificatesRequest) (*meshcav1.ListCertificatesResponse, error) {
	resp, err := r.listCertificates(ctx, req)
	if err != nil {
		return nil, Status(ctx, r.log, "ListCertificates", err)
	}
	return resp, nil
}

func (r *Reads) listCertificates(ctx context.Context, req *meshcav1.ListCertificatesRequest) (*meshcav1.ListCertificatesResponse, error) {
	limit, err := listLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	f := store.CertificateFilter{Cluster: req.GetCluster(), Limit: limit}
	if req.GetSpiffeId() != "" {
		id, err := ParseSPIFFEID(req.GetSpiffeId())
		if err != nil {
			return nil, err
		}
		f.SPIFFEID = id.String()
	}
	if req.GetActive() {
		f.ActiveAt = r.now()
	}
	certs, err := r.st.Certificates(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("%w: list certificates: %w", grpcx.ErrUnavailable, err)
	}
	resp := &meshcav1.ListCertificatesResponse{Certificates: make([]*meshcav1.Certificate, 0, len(certs))}
	for _, c := range certs {
		resp.Certificates = append(resp.Certificates, certificateToProto(c))
	}
	return resp, nil
}

// GetCertificate implements meshcav1.AdminServiceServer: the record of one
// serial, with the revocation in force that covers it, if any (its serial,
// its SPIFFE ID or its cluster, in that order of preference), when the
// store keeps revocations.
func (r *Reads) GetCertificate(ctx context.Context, req *meshcav1.GetCertificateRequest) (*meshcav1.GetCertificateResponse, error) {
	resp, err := r.getCertificate(ctx, req)
	if err != nil {
		return nil, Status(ctx, r.log, "GetCertificate", err)
	}
	return resp, nil
}

func (r *Reads) getCertificate(ctx context.Context, req *meshcav1.GetCertificateRequest) (*meshcav1.GetCertificateResponse, error) {
	serial, err := ParseSerial(req.GetSerial())
	if err != nil {
		return nil, err
	}
	c, err := r.st.Certificate(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: no certificate with serial %s", grpcx.ErrNotFound, serial)
	case err != nil:
		return nil, fmt.Errorf("%w: get certificate %s: %w", grpcx.ErrUnavailable, serial, err)
	}
	resp := &meshcav1.GetCertificateResponse{Certificate: certificateToProto(c)}
	if rl, ok := r.st.(revocationLister); ok {
		revs, err := rl.Revocations(ctx, r.now())
		if err != nil {
			return nil, fmt.Errorf("%w: revocations: %w", grpcx.ErrUnavailable, err)
		}
		if rev, ok := covering(revs, c); ok {
			resp.Revoked = RevocationToProto(rev)
		}
	}
	return resp, nil
}

// covering returns the revocation among revs that covers c: one of its
// serial first, then one of its SPIFFE ID, then one of its cluster. As on
// the issuers' deny-lists, serial and SPIFFE ID revocations recorded for
// another cluster do not count.
func covering(revs []store.Revocation, c store.Certificate) (store.Revocation, bool) {
	sameCluster := func(r store.Revocation) bool { return r.Cluster == "" || r.Cluster == c.Cluster }
	matches := [...]func(store.Revocation) bool{
		func(r store.Revocation) bool {
			return (r.Kind == store.RevokeSerial || r.Kind == store.RevokeIntermediate) && r.Value == c.Serial &&
				sameCluster(r)
		},
		func(r store.Revocation) bool {
			return r.Kind == store.RevokeSPIFFEID && r.Value == c.SPIFFEID && sameCluster(r)
		},
		func(r store.Revocation) bool {
			return r.Kind == store.RevokeCluster && c.Cluster != "" && r.Value == c.Cluster
		},
	}
	for _, match := range matches {
		for _, rev := range revs {
			if match(rev) {
				return rev, true
			}
		}
	}
	return store.Revocation{}, false
}

// ListRevocations implements meshcav1.AdminServiceServer: the revocations
// in force now, oldest first; Unimplemented when the store keeps none.
func (r *Reads) ListRevocations(ctx context.Context, _ *meshcav1.ListRevocationsRequest) (*meshcav1.ListRevocationsResponse, error) {
	resp, err := r.listRevocations(ctx)
	if err != nil {
		return nil, Status(ctx, r.log, "ListRevocations", err)
	}
	return resp, nil
}

func (r *Reads) listRevocations(ctx context.Context) (*meshcav1.ListRevocationsResponse, error) {
	rl, ok := r.st.(revocationLister)
	if !ok {
		return nil, fmt.Errorf("%w: this server's store keeps no revocations", grpcx.ErrUnimplemented)
	}
	revs, err := rl.Revocations(ctx, r.now())
	if err != nil {
		return nil, fmt.Errorf("%w: revocations: %w", grpcx.ErrUnavailable, err)
	}
	resp := &meshcav1.ListRevocationsResponse{Revocations: make([]*meshcav1.Revocation, 0, len(revs))}
	for _, rev := range revs {
		resp.Revocations = append(resp.Revocations, RevocationToProto(rev))
	}
	return resp, nil
}

// ListAuditEvents implements meshcav1.AdminServiceServer: the events at or
// after since (unset means DefaultAuditWindow ago), in sequence order, the
// first limit of them (zero means DefaultListLimit): to read on, ask again
// from the time of the last one.
func (r *Reads) ListAuditEvents(ctx context.Context, req *meshcav1.ListAuditEventsRequest) (*meshcav1.ListAuditEventsResponse, error) {
	resp, err := r.listAuditEvents(ctx, req)
	if err != nil {
		return nil, Status(ctx, r.log, "ListAuditEvents", err)
	}
	return resp, nil
}

func (r *Reads) listAuditEvents(ctx context.Context, req *meshcav1.ListAuditEventsRequest) (*meshcav1.ListAuditEventsResponse, error) {
	limit, err := listLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	since := r.now().Add(-defaultAuditWindow)
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, fmt.Errorf("%w: since: %w", grpcx.ErrInvalidArgument, err)
		}
		since = req.GetSince().AsTime()
	}
	events, err := r.st.AuditEvents(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("%w: audit events: %w", grpcx.ErrUnavailable, err)
	}
	events = events[:min(len(events), limit)]
	resp := &meshcav1.ListAuditEventsResponse{Events: make([]*meshcav1.AuditEvent, 0, len(events))}
	for _, ev := range events {
		resp.Events = append(resp.Events, auditEventToProto(ev))
	}
	return resp, nil
}

// VerifyAudit implements meshcav1.AdminServiceServer: it walks the whole
// chain and reports the events that verified and the head they end at (the
// whole chain when ok; when broken, problem names the first bad link and
// the head is the last good event before it). Unimplemented when the store
// cannot verify its chain.
func (r *Reads) VerifyAudit(ctx context.Context, _ *meshcav1.VerifyAuditRequest) (*meshcav1.VerifyAuditResponse, error) {
	resp, err := r.verifyAudit(ctx)
	if err != nil {
		return nil, Status(ctx, r.log, "VerifyAudit", err)
	}
	return resp, nil
}

func (r *Reads) verifyAudit(ctx context.Context) (*meshcav1.VerifyAuditResponse, error) {
	v, ok := r.st.(auditVerifier)
	if !ok {
		return nil, fmt.Errorf("%w: this server's store cannot verify its audit chain", grpcx.ErrUnimplemented)
	}
	head, err := v.VerifyAuditHead(ctx)
	// Sequence numbers start at 1 without gaps (the verifier checks), so
	// the head's seq counts the events that verified.
	resp := &meshcav1.VerifyAuditResponse{Ok: err == nil, Events: head.Seq, HeadSeq: head.Seq, HeadHash: hex.EncodeToString(head.Hash)}
	var broken *store.BrokenLinkError
	switch {
	case errors.As(err, &broken):
		r.log.WarnContext(ctx, "audit chain broken", "seq", broken.Seq, "reason", broken.Reason, "actor", Actor(ctx))
		resp.Events, resp.Problem = broken.Seq-1, broken.Error()
		return resp, nil
	case err != nil:
		return nil, fmt.Errorf("%w: verify audit chain: %w", grpcx.ErrUnavailable, err)
	}
	return resp, nil
}

// listLimit is the row cap of a list request: DefaultListLimit for zero,
// the request's own up to MaxListLimit.
func listLimit(n int32) (int, error) {
	switch {
	case n == 0:
		return DefaultListLimit, nil
	case n < 0 || n > MaxListLimit:
		return 0, fmt.Errorf("%w: limit %d: must be between 1 and %d", grpcx.ErrInvalidArgument, n, MaxListLimit)
	}
	return int(n), nil
}

// maxSerialHexDigits is the longest serial RFC 5280 allows: 20 octets.
const maxSerialHexDigits = 40

// ParseSerial returns a certificate serial in the store's form (lower-case
// hexadecimal, no leading zeros, as trust.SerialHex writes it) from what an
// operator may paste: upper or lower case, an optional "0x", and ':'
// between octets as OpenSSL prints them. A malformed serial wraps
// grpcx.ErrInvalidArgument.
func ParseSerial(s string) (string, error) {
	digits := strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"), ":", "")
	n, ok := new(big.Int).SetString(digits, 16)
	switch {
	case digits == "" || !ok || strings.ContainsAny(digits, "+-_"):
		return "", fmt.Errorf("%w: serial %q: not a hexadecimal number", grpcx.ErrInvalidArgument, s)
	case n.Sign() <= 0:
		return "", fmt.Errorf("%w: serial %q: must be positive", grpcx.ErrInvalidArgument, s)
	case len(n.Text(16)) > maxSerialHexDigits:
		return "", fmt.Errorf("%w: serial %q: longer than 20 octets", grpcx.ErrInvalidArgument, s)
	}
	return n.Text(16), nil
}

// ParseSPIFFEID parses a SPIFFE ID from a request; a malformed one wraps
// grpcx.ErrInvalidArgument.
func ParseSPIFFEID(s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: SPIFFE ID %q: %w", grpcx.ErrInvalidArgument, s, err)
	}
	return id, nil
}
