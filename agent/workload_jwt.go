package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshca/meshca/internal/grpcx"
)

// Bounds of the Workload API's JWT requests: whoever may connect to the
// socket must not make the agent mint, cache or parse without limit.
const (
	// maxJWTAudiences bounds the audiences of one FetchJWTSVID.
	maxJWTAudiences = 16
	// maxJWTAudienceLen bounds each audience, in bytes.
	maxJWTAudienceLen = 256
	// maxJWTSVIDLen bounds the token ValidateJWTSVID parses, in bytes; a
	// JWT-SVID of meshca's is well under 1 KiB.
	maxJWTSVIDLen = 16 << 10
	// maxJWTCacheEntries bounds the JWT-SVIDs cached, one per audience set.
	maxJWTCacheEntries = 256
	// mintTimeout bounds a call to the issuer.
	mintTimeout = 15 * time.Second
	// maxConcurrentMints bounds the distinct JWT-SVID mints (audience sets
	// not cached) in flight to the issuer; a FetchJWTSVID beyond it fails
	// with ResourceExhausted. Each mint is a MintJWTSVID at the issuer with
	// the pod's token, so whoever can open the socket must not fan out one
	// per audience: a workload asks for a few audiences, once per half a
	// token's lifetime, and concurrent requests for one audience set share
	// one mint.
	maxConcurrentMints = 8
)

// FetchJWTSVID returns a JWT-SVID of the agent's identity for the audiences
// requested (at least one, each non-empty, bounded by maxJWTAudiences and
// maxJWTAudienceLen; duplicates and order do not matter). spiffe_id, when
// set, must be the agent's identity: the socket serves one identity. The
// issuer mints it on the caller's behalf with the agent's token; the agent
// validates it against its own JWT bundles, requires its identity as "sub"
// and exactly the audiences asked for as "aud", and caches it per audience
// set until half its lifetime has passed (a cached one is validated again
// before it is returned, so a withdrawn key is not served).
func (w *workloadServer) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	resp, err := w.fetchJWTSVID(ctx, req)
	if err != nil {
		return nil, w.errs.Status(ctx, "FetchJWTSVID", err)
	}
	return resp, nil
}

func (w *workloadServer) fetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	audience, err := jwtAudience(req.GetAudience())
	if err != nil {
		return nil, err
	}
	snap, _ := w.cfg.Source.Current()
	id := snap.ID()
	if err := checkRequestedID(req.GetSpiffeId(), id); err != nil {
		return nil, err
	}
	if w.cfg.Minter == nil {
		return nil, fmt.Errorf("%w: this agent serves no JWT-SVIDs", grpcx.ErrUnimplemented)
	}
	key := strings.Join(audience, "\x00")
	now := time.Now()
	if token, ok := w.jwts.get(key, now); ok {
		if _, err := jwtsvid.ParseAndValidate(token, snap.jwtSource(), audience); err == nil {
			return jwtResponse(id, token), nil
		}
	}
	ch := w.mints.DoChan(key, func() (any, error) {
		// Shared by every caller of this audience set: one leaving early
		// does not cancel it for the others.
		return w.mint(context.WithoutCancel(ctx), snap, key, audience)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return jwtResponse(id, r.Val.(string)), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// mint asks the issuer for a JWT-SVID for audience, checks it against
// snap and caches it under key, unless maxConcurrentMints mints are in
// flight already.
func (w *workloadServer) mint(ctx context.Context, snap *snapshot, key string, audience []string) (string, error) {
	if w.minting.Add(1) > maxConcurrentMints {
		w.minting.Add(-1)
		return "", fmt.Errorf("%w: %d JWT-SVIDs of other audiences are being minted; retry", grpcx.ErrResourceExhausted, maxConcurrentMints)
	}
	defer w.minting.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, mintTimeout)
	defer cancel()
	now := time.Now()
	token, err := w.cfg.Minter.MintJWTSVID(ctx, audience, 0)
	if err != nil {
		return "", issuerError(err)
	}
	svid, err := checkMinted(token, snap, audience)
	if err != nil {
		return "", err
	}
	issuedAt := now
	if iat, ok := svid.Claims["iat"].(float64); ok {
		issuedAt = time.Unix(int64(iat), 0)
	}
	w.jwts.put(key, token, jwtRefreshAt(issuedAt, svid.Expiry), now)
	w.cfg.Logger.Debug("JWT-SVID minted", "spiffe_id", snap.ID().String(), "audiences", len(audience), "expires_at", svid.Expiry)
	return token, nil
}

// jwtAudience checks the audiences of a request and returns them sorted,
// without duplicates.
func jwtAudience(audience []string) ([]string, error) {
	switch {
	case len(audience) == 0:
		return nil, fmt.Errorf("%w: at least one audience is required", grpcx.ErrInvalidArgument)
	case len(audience) > maxJWTAudiences:
		return nil, fmt.Errorf("%w: %d audiences, at most %d", grpcx.ErrInvalidArgument, len(audience), maxJWTAudiences)
	}
	for _, a := range audience {
		if err := checkAudience(a); err != nil {
			return nil, err
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(audience))), nil
}

func checkAudience(a string) error {
	switch {
	case a == "":
		return fmt.Errorf("%w: an audience is empty", grpcx.ErrInvalidArgument)
	case len(a) > maxJWTAudienceLen:
		return fmt.Errorf("%w: an audience is %d bytes long, at most %d", grpcx.ErrInvalidArgument, len(a), maxJWTAudienceLen)
	}
	return nil
}

// checkRequestedID checks the spiffe_id of a FetchJWTSVID (empty: the
// agent's) against own, the agent's identity (zero: none yet).
func checkRequestedID(requested string, own spiffeid.ID) error {
	var want spiffeid.ID
	if requested != "" {
		var err error
		if want, err = spiffeid.FromString(requested); err != nil {
			return fmt.Errorf("%w: spiffe_id: %w", grpcx.ErrInvalidArgument, err)
		}
	}
	switch {
	case own.IsZero():
		return fmt.Errorf("%w: the agent has no identity yet", grpcx.ErrUnavailable)
	case !want.IsZero() && want != own:
		return fmt.Errorf("%w: this socket serves %s only", grpcx.ErrPermissionDenied, own)
	}
	return nil
}

// checkMinted validates a JWT-SVID the issuer minted for audience against
// the JWT bundles of snap, and checks that it names the agent's identity
// and exactly audience.
func checkMinted(token string, snap *snapshot, audience []string) (*jwtsvid.SVID, error) {
	svid, err := jwtsvid.ParseAndValidate(token, snap.jwtSource(), audience)
	if err != nil {
		// A key is published before it signs; one the agent does not know
		// yet reaches it with the next bundle.
		return nil, fmt.Errorf("%w: the issuer's JWT-SVID does not validate against the agent's JWT bundles: %w", grpcx.ErrUnavailable, err)
	}
	if svid.ID != snap.ID() {
		return nil, fmt.Errorf("the issuer's JWT-SVID names %s, want %s", svid.ID, snap.ID())
	}
	if got := slices.Compact(slices.Sorted(slices.Values(svid.Audience))); !slices.Equal(got, audience) {
		return nil, fmt.Errorf("the issuer's JWT-SVID is for audiences %q, want %q", got, audience)
	}
	return svid, nil
}

// issuerError classifies a failed mint: the issuer's refusals of the
// identity or the request reach the workload as they are, the rest is
// retryable.
func issuerError(err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied:
		return fmt.Errorf("%w: %w", grpcx.ErrPermissionDenied, err)
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %w", grpcx.ErrInvalidArgument, err)
	case codes.Unimplemented:
		return fmt.Errorf("%w: the issuer mints no JWT-SVIDs: %w", grpcx.ErrUnimplemented, err)
	case codes.Canceled:
		return fmt.Errorf("%w: %w", context.Canceled, err)
	}
	return fmt.Errorf("%w: %w", grpcx.ErrUnavailable, err)
}

func jwtResponse(id spiffeid.ID, token string) *workload.JWTSVIDResponse {
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: id.String(), Svid: token}}}
}

// FetchJWTBundles streams the JWT bundles of every trust domain the agent
// knows, own and federated, keyed by trust domain ID (spiffe://td), each a
// JWKS document whose keys carry "kid" and "use":"jwt-svid"; and again
// after every change. It waits until the agent knows its trust domain
// (from its first certificate).
func (w *workloadServer) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return w.watch(stream.Context(), func(snap *snapshot) (string, func() error) {
		if snap.SVID() == nil || snap.JWTBundles() == nil {
			return "", nil
		}
		return snap.JWTVersion(), func() error {
			return stream.Send(&workload.JWTBundlesResponse{Bundles: snap.JWTBundles()})
		}
	})
}

// ValidateJWTSVID validates a JWT-SVID for one audience against the
// agent's JWT bundles (go-spiffe's jwtsvid.ParseAndValidate: a known key of
// the subject's trust domain, the audience, not expired) and returns its
// SPIFFE ID and claims. The token is bounded by maxJWTSVIDLen.
func (w *workloadServer) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	resp, err := validateJWTSVID(req, w.cfg.Source)
	if err != nil {
		return nil, w.errs.Status(ctx, "ValidateJWTSVID", err)
	}
	return resp, nil
}

func validateJWTSVID(req *workload.ValidateJWTSVIDRequest, src source) (*workload.ValidateJWTSVIDResponse, error) {
	if err := checkAudience(req.GetAudience()); err != nil {
		return nil, err
	}
	switch token := req.GetSvid(); {
	case token == "":
		return nil, fmt.Errorf("%w: svid is required", grpcx.ErrInvalidArgument)
	case len(token) > maxJWTSVIDLen:
		return nil, fmt.Errorf("%w: svid is %d bytes long, at most %d", grpcx.ErrInvalidArgument, len(token), maxJWTSVIDLen)
	}
	snap, _ := src.Current()
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), snap.jwtSource(), []string{req.GetAudience()})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", grpcx.ErrInvalidArgument, err)
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, fmt.Errorf("encode claims: %w", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// jwtRefreshAt returns when a JWT-SVID issued at iat that expires at exp
// is replaced rather than served again: at half its lifetime.
func jwtRefreshAt(iat, exp time.Time) time.Time { return iat.Add(exp.Sub(iat) / 2) }

// jwtCache holds the JWT-SVIDs minted, one per audience set, until they
// are due for replacement. The zero value is empty and ready.
type jwtCache struct {
	mu      sync.Mutex
	entries map[string]cachedJWT
}

type cachedJWT struct {
	token     string
	refreshAt time.Time
}

// get returns the token cached under key if it is not due at now.
func (c *jwtCache) get(key string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.refreshAt) {
		return "", false
	}
	return e.token, true
}

// put caches token under key until refreshAt. When the cache is full it
// first drops the entries due at now, then, if none was, an arbitrary one.
func (c *jwtCache) put(key, token string, refreshAt, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !now.Before(refreshAt) {
		return
	}
	if c.entries == nil {
		c.entries = map[string]cachedJWT{}
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= maxJWTCacheEntries {
		for k, e := range c.entries {
			if !now.Before(e.refreshAt) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < maxJWTCacheEntries {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = cachedJWT{token: token, refreshAt: refreshAt}
}
