package issuer

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/trust"
)

// BundleSource supplies the trust bundle an issuer publishes to its agents.
// *Intermediates implements it with the bundle relayed from the root.
type BundleSource interface {
	// Current returns the newest bundle, nil when there is none yet, and a
	// channel that is closed once a newer one replaces it.
	Current() (*trust.TrustBundle, <-chan struct{})
}

// issuerBundles is the BundleSource of an issuer without a root to relay
// from: one trust domain, the issuer's, with the issuer's current roots.
type issuerBundles struct{ iss *Issuer }

var _ BundleSource = issuerBundles{}

// LocalBundles is the BundleSource of iss's own roots: one trust domain,
// the issuer's, following every root the issuer signs under.
func LocalBundles(iss *Issuer) BundleSource { return issuerBundles{iss} }

func (s issuerBundles) Current() (*trust.TrustBundle, <-chan struct{}) {
	sig, replaced := s.iss.signing.Load()
	return localTrustBundle(s.iss, sig), replaced
}

// localTrustBundle builds the bundle of a signing. Its sequence is derived
// from its content, so that it is the same across restarts and replicas:
// the newest root's NotBefore in Unix milliseconds. It grows when a newer
// root joins; the sequences of a root service (publication time in Unix
// milliseconds) stay above it, so moving an issuer under a root service
// never looks like going back.
func localTrustBundle(iss *Issuer, sig *signing) *trust.TrustBundle {
	var newest int64
	for _, r := range sig.bundle.Roots() {
		newest = max(newest, r.NotBefore.UnixMilli())
	}
	return &trust.TrustBundle{
		Sequence:   uint64(max(newest, 1)),
		Domains:    []trust.DomainBundle{{TrustDomain: iss.cfg.TrustDomain, Roots: sig.bundle}},
		ActiveRoot: trust.Fingerprint(sig.root),
	}
}

// CRLSource supplies the issuer's own CRLs. *CRLSigner implements it.
type CRLSource interface {
	// Current returns the CRLs and a channel closed when they change.
	Current() ([]trust.CRL, <-chan struct{})
}

// bundleService serves meshca.v1.BundleService to agents. GetBundle is
// public: one cheap answer, bounded by the connection and stream caps. A
// watch holds a stream and its memory until the caller leaves, so it takes
// a workload credential (see authenticateWatch) and a watch slot (see
// grpclimit.Limits.AcquireWatch), given back when the stream ends.
//
// With a CRLSource, the issuer's own CRLs are added to its trust domain's
// entry of every bundle it serves (see withCRLs), so agents get them at
// once, with or without the root. The root's signature does not cover
// CRLs (trust.TrustBundle.Digest), so the bundle keeps the root's Sequence and
// Signature, which still verify. A change of CRLs alone therefore reaches
// watchers as a bundle with the sequence they already hold: agents replace
// the CRLs of the bundle they hold with those of a bundle of the same
// sequence (and verify each CRL before use).
type bundleService struct {
	meshcav1.UnimplementedBundleServiceServer
	// srv authenticates watches, holds the watch caps and maps errors.
	srv *Server
	src BundleSource
	// crls and td, when crls is not nil: the issuer's CRLs and its trust
	// domain.
	crls CRLSource
	// jwts, when not nil: the issuer's JWT authorities, added to td's
	// entry like its CRLs.
	jwts JWTSource
	td   spiffeid.TrustDomain
	log  *slog.Logger
	// stopping ends every watch when the server shuts down.
	stopping <-chan struct{}

	// memo is the last merge, shared by every watcher: a bundle with CRLs
	// is merged once per change, not once per agent.
	memoMu sync.Mutex
	memo   mergedBundle
}

type mergedBundle struct {
	base *trust.TrustBundle
	// crlsChanged and jwtsChanged identify the CRLs and JWT authorities
	// merged: the sources replace the channel with every change.
	crlsChanged, jwtsChanged <-chan struct{}
	out                      *trust.TrustBundle
}

// current returns the bundle to serve and three channels, any of which
// is closed when it may change; the second is nil without a CRLSource,
// the third without a JWTSource.
func (b *bundleService) current() (tb *trust.TrustBundle, changed, crlsChanged, jwtsChanged <-chan struct{}) {
	tb, changed = b.src.Current()
	if (b.crls == nil && b.jwts == nil) || tb == nil {
		return tb, changed, nil, nil
	}
	var crls []trust.CRL
	if b.crls != nil {
		crls, crlsChanged = b.crls.Current()
	}
	var jwts []trust.JWTAuthority
	if b.jwts != nil {
		jwts, jwtsChanged = b.jwts.Current()
	}
	b.memoMu.Lock()
	defer b.memoMu.Unlock()
	if b.memo.base != tb || b.memo.crlsChanged != crlsChanged || b.memo.jwtsChanged != jwtsChanged {
		b.memo = mergedBundle{base: tb, crlsChanged: crlsChanged, jwtsChanged: jwtsChanged,
			out: withJWTAuthorities(withCRLs(tb, b.td, crls), b.td, jwts)}
	}
	return b.memo.out, changed, crlsChanged, jwtsChanged
}

func (b *bundleService) GetBundle(ctx context.Context, _ *meshcav1.GetBundleRequest) (*meshcav1.GetBundleResponse, error) {
	tb, _, _, _ := b.current()
	if tb == nil {
		return nil, b.srv.status(ctx, "bundle request", errNoBundle)
	}
	return &meshcav1.GetBundleResponse{Bundle: tb.ToProto()}, nil
}

// WatchBundle sends the current bundle at once, unless the caller already
// holds its sequence and it carries no CRLs or JWT authorities (the
// caller's may be older), then every newer one, and the same sequence
// again whenever its CRLs or JWT authorities change, until the caller goes
// away.
func (b *bundleService) WatchBundle(req *meshcav1.WatchBundleRequest, stream grpc.ServerStreamingServer[meshcav1.WatchBundleResponse]) error {
	ctx := stream.Context()
	id, err := b.srv.iss.authenticateWatch(ctx)
	if err != nil {
		return b.srv.status(ctx, "bundle watch", err)
	}
	release, err := b.srv.limits.AcquireWatch(ctx)
	if err != nil {
		return b.srv.status(ctx, "bundle watch", fmt.Errorf("%s: %w", id, err))
	}
	defer release()
	last := req.GetKnownSequence()
	var sent *trust.TrustBundle
	for {
		tb, changed, crlsChanged, jwtsChanged := b.current()
		if tb != nil && shouldSend(tb, last, sent) {
			if err := stream.Send(&meshcav1.WatchBundleResponse{Bundle: tb.ToProto()}); err != nil {
				if !errors.Is(err, context.Canceled) && ctx.Err() == nil {
					b.log.InfoContext(ctx, "bundle watch ended", "error", err.Error(), "peer", grpcx.PeerAddr(ctx))
				}
				return err
			}
			last, sent = tb.Sequence, tb
		}
		select {
		case <-changed:
		case <-crlsChanged:
		case <-jwtsChanged:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-b.stopping:
			return status.Error(codes.Unavailable, "issuer shutting down")
		}
	}
}

// shouldSend decides whether a watcher that holds sequence last (and was
// sent the bundle sent on this stream, nil for none yet) gets tb.
func shouldSend(tb *trust.TrustBundle, last uint64, sent *trust.TrustBundle) bool {
	switch {
	case tb.Sequence > last:
		return true
	case sent == nil:
		return tb.Sequence != last || hasRelayed(tb)
	default:
		return tb.Sequence == last && tb != sent && !tb.Equal(sent)
	}
}

// hasRelayed reports whether tb carries CRLs or JWT authorities, which
// change without a new sequence.
func hasRelayed(tb *trust.TrustBundle) bool {
	for _, d := range tb.Domains {
		if len(d.CRLs) > 0 || len(d.JWTAuthorities) > 0 {
			return true
		}
	}
	return false
}

// withCRLs returns tb with own added to the CRLs of td's entry: of the
// CRLs of one issuer (the first certificate of the issuer chain; for a
// root's CRL, its issuer name and key identifier) only the one with the
// highest CRL number is kept, so that the root's copy of an older CRL of
// this issuer goes. CRLs that do not parse are left as they are, for
// agents to reject. tb is not modified; its sequence and signature are
// kept. Without a domain td, tb is returned.
func withCRLs(tb *trust.TrustBundle, td spiffeid.TrustDomain, own []trust.CRL) *trust.TrustBundle {
	i := -1
	for j, d := range tb.Domains {
		if d.TrustDomain == td {
			i = j
		}
	}
	if i < 0 || len(own) == 0 {
		return tb
	}
	out := *tb
	out.Domains = append([]trust.DomainBundle(nil), tb.Domains...)
	out.Domains[i].CRLs = mergeCRLs(tb.Domains[i].CRLs, own)
	return &out
}

// mergeCRLs keeps, per issuer, the CRL with the highest number, in the
// order issuers first appear; on a tie the earlier one stays.
func mergeCRLs(lists ...[]trust.CRL) []trust.CRL {
	var out []trust.CRL
	var numbers []*x509.RevocationList
	index := map[string]int{}
	for _, list := range lists {
		for _, c := range list {
			rl, err := x509.ParseRevocationList(c.DER)
			if err != nil || rl.Number == nil {
				out, numbers = append(out, c), append(numbers, nil)
				continue
			}
			key := crlIssuerKey(c, rl)
			j, seen := index[key]
			switch {
			case !seen:
				index[key] = len(out)
				out, numbers = append(out, c), append(numbers, rl)
			case rl.Number.Cmp(numbers[j].Number) > 0:
				out[j], numbers[j] = c, rl
			}
		}
	}
	return out
}

func crlIssuerKey(c trust.CRL, rl *x509.RevocationList) string {
	if len(c.IssuerChain) > 0 {
		return "chain:" + string(c.IssuerChain[0])
	}
	var key bytes.Buffer
	key.WriteString("root:")
	key.WriteString(strconv.Itoa(len(rl.RawIssuer)))
	key.Write(rl.RawIssuer)
	key.Write(rl.AuthorityKeyId)
	return key.String()
}

// withJWTAuthorities returns tb with own added to the JWT authorities of
// td's entry, before those tb has; an authority tb already names (the
// root relaying this issuer's own, by key ID) is not repeated. tb is not
// modified; its sequence and signature are kept: the root's signature does
// not cover an own domain's authorities (trust.TrustBundle.Digest), each
// authenticates itself by its chain. Without a domain td, tb is returned.
func withJWTAuthorities(tb *trust.TrustBundle, td spiffeid.TrustDomain, own []trust.JWTAuthority) *trust.TrustBundle {
	i := slices.IndexFunc(tb.Domains, func(d trust.DomainBundle) bool { return d.TrustDomain == td && !d.Federated })
	if i < 0 || len(own) == 0 {
		return tb
	}
	merged := slices.Clone(own)
	for _, a := range tb.Domains[i].JWTAuthorities {
		if !slices.ContainsFunc(own, func(o trust.JWTAuthority) bool { return o.KeyID == a.KeyID }) {
			merged = append(merged, a)
		}
	}
	out := *tb
	out.Domains = slices.Clone(tb.Domains)
	out.Domains[i].JWTAuthorities = merged
	return &out
}
