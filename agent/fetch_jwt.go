package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// jwtMinter obtains JWT-SVIDs for the agent's identity. *Client is the real
// one.
type jwtMinter interface {
	// MintJWTSVID returns a JWT-SVID (compact JWS) for audience, valid for
	// ttl (zero: the issuer's default), as the issuer sent it: the caller
	// validates it.
	MintJWTSVID(ctx context.Context, audience []string, ttl time.Duration) (string, error)
}

var _ jwtMinter = (*Client)(nil)

// MintJWTSVID asks the issuer for a JWT-SVID
// (meshca.v1.JWTSVIDService/MintJWTSVID) on the connection Fetch uses, so
// the issuer is authenticated by the same roots and checks, with the token
// of ClientConfig.TokenFile (SetTokenFile), which attests the identity.
// The token is returned unverified; the issuer's status is wrapped.
func (c *Client) MintJWTSVID(ctx context.Context, audience []string, ttl time.Duration) (string, error) {
	if *c.tokenFile.Load() == "" {
		return "", errors.New("mint JWT-SVID: no token file")
	}
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	ctx, err := c.withTokenFile(ctx)
	if err != nil {
		return "", fmt.Errorf("mint JWT-SVID: %w", err)
	}
	resp, err := meshcav1.NewJWTSVIDServiceClient(conn).MintJWTSVID(ctx,
		&meshcav1.MintJWTSVIDRequest{Audience: audience, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		return "", fmt.Errorf("issuer %s: mint JWT-SVID: %w", c.cfg.Address, err)
	}
	return resp.GetToken(), nil
}
