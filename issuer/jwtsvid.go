package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bounds of a JWT-SVID request's audiences: a token travels in an HTTP
// header, and a caller must not make the issuer sign megabytes.
const (
	MaxJWTAudiences     = 16
	MaxJWTAudienceBytes = 256
)

// JWTRequest is one JWT-SVID request.
type JWTRequest struct {
	// Token is the bearer credential, without "Bearer ".
	Token string
	// ClusterID names the caller's cluster; empty means the local one.
	ClusterID string
	// Audience is the "aud" claim: 1 to MaxJWTAudiences non-empty values
	// of at most MaxJWTAudienceBytes each.
	Audience []string
	// TTL is the requested lifetime; zero means JWTConfig.DefaultTTL. It
	// is clamped to JWTConfig.MaxTTL and to the signing key's certificate.
	TTL time.Duration
}

// JWTSVID is a minted JWT-SVID.
type JWTSVID struct {
	// ID is the token's "sub", the attested identity.
	ID spiffeid.ID
	// Token is the compact JWS.
	Token string
	// ExpiresAt is the token's "exp".
	ExpiresAt time.Time
	// KeyID is the "kid" of the key that signed it.
	KeyID string
}

// checkAudience refuses an audience list outside the bounds of
// JWTRequest.Audience.
func checkAudience(aud []string) error {
	switch {
	case len(aud) == 0:
		return fmt.Errorf("%w: at least one audience is required", ErrInvalidRequest)
	case len(aud) > MaxJWTAudiences:
		return fmt.Errorf("%w: %d audiences, at most %d allowed", ErrInvalidRequest, len(aud), MaxJWTAudiences)
	}
	for i, a := range aud {
		if a == "" || len(a) > MaxJWTAudienceBytes {
			return fmt.Errorf("%w: audience %d is empty or longer than %d bytes", ErrInvalidRequest, i, MaxJWTAudienceBytes)
		}
	}
	return nil
}

// jwtLifetime returns the lifetime of a token requested for ttl (zero:
// def), clamped to maxTTL.
func jwtLifetime(ttl, def, maxTTL time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("%w: lifetime must not be negative", ErrInvalidRequest)
	case ttl == 0:
		return def, nil
	}
	return min(ttl, maxTTL), nil
}

// Mint runs the JWT-SVID path: check the request → attest (the same
// attestor, cluster routing, policy and deny-list as certificates) → sign
// with the current intermediate's key → verify → return. Nothing is
// recorded: a JWT-SVID is counted and logged by the caller only.
func (k *JWTKeys) Mint(ctx context.Context, req JWTRequest) (JWTSVID, error) {
	if err := checkAudience(req.Audience); err != nil {
		return JWTSVID{}, err
	}
	ttl, err := jwtLifetime(req.TTL, k.cfg.DefaultTTL, k.cfg.MaxTTL)
	if err != nil {
		return JWTSVID{}, err
	}
	_, id, err := k.cfg.Issuer.identify(ctx, req.Token, req.ClusterID)
	if err != nil {
		return JWTSVID{}, err
	}
	now := k.cfg.Issuer.cfg.Now()
	key, err := k.signer(now)
	if err != nil {
		return JWTSVID{}, fmt.Errorf("%s: %w", id, err)
	}
	exp := now.Add(ttl)
	if exp.After(key.notAfter) {
		exp = key.notAfter
	}
	// Seconds are all a NumericDate holds: exp never rounds up past the
	// key's certificate.
	exp = time.Unix(exp.Unix(), 0)
	if !exp.After(now) {
		return JWTSVID{}, fmt.Errorf("%w: %s: the JWT-SVID key's certificate ends at %s", ErrUnavailable, id, key.notAfter.UTC().Format(time.RFC3339))
	}
	key.used(now)
	token, err := k.sign(key, jwt.Claims{
		Subject: id.String(), Audience: jwt.Audience(req.Audience), Issuer: k.cfg.IssuerURL,
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
	})
	if err != nil {
		return JWTSVID{}, fmt.Errorf("%w: sign JWT-SVID for %s: %w", ErrUnavailable, id, err)
	}
	if err := verifyJWTSVID(token, key, id, req.Audience, exp); err != nil {
		return JWTSVID{}, fmt.Errorf("verify JWT-SVID for %s: %w", id, err)
	}
	return JWTSVID{ID: id, Token: token, ExpiresAt: exp, KeyID: key.authority.KeyID}, nil
}

// sign makes a compact ES256 JWS of claims under key, with the key's "kid"
// and typ JWT.
func (k *JWTKeys) sign(key *jwtKey, claims jwt.Claims) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key.priv, KeyID: key.authority.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// verifyJWTSVID checks a token as a validator will: signed with ES256 by
// key under its "kid", for sub id, audiences aud, expiring at exp.
func verifyJWTSVID(token string, key *jwtKey, id spiffeid.ID, aud []string, exp time.Time) error {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID != key.authority.KeyID {
		return errors.New("token does not name its key")
	}
	var c jwt.Claims
	if err := tok.Claims(key.authority.PublicKey, &c); err != nil {
		return err
	}
	if c.Subject != id.String() || !slices.Equal([]string(c.Audience), aud) || c.Expiry == nil || !c.Expiry.Time().Equal(exp) {
		return errors.New("token claims differ from the request")
	}
	return nil
}
