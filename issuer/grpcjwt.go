package issuer

import (
	"context"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/internal/grpcx"
)

// jwtService serves meshca.v1.JWTSVIDService: the caller authenticates as
// for CreateCertificate ("authorization: Bearer <token>", optional
// "clusterid") and gets a JWT-SVID of its attested identity.
type jwtService struct {
	meshcav1.UnimplementedJWTSVIDServiceServer
	srv  *Server
	keys *JWTKeys
}

func (j *jwtService) MintJWTSVID(ctx context.Context, req *meshcav1.MintJWTSVIDRequest) (*meshcav1.MintJWTSVIDResponse, error) {
	resp, err := j.mint(ctx, req)
	j.srv.iss.metrics.jwtSVID(status.Code(err))
	return resp, err
}

func (j *jwtService) mint(ctx context.Context, req *meshcav1.MintJWTSVIDRequest) (*meshcav1.MintJWTSVIDResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	token, err := bearerToken(md)
	if err == nil {
		svid, mintErr := j.keys.Mint(ctx, JWTRequest{
			Token: token, ClusterID: firstValue(md, "clusterid"), Audience: req.GetAudience(),
			TTL: requestedTTL(req.GetTtlSeconds()),
		})
		if mintErr == nil {
			// The token itself never reaches a log.
			j.srv.log.InfoContext(ctx, "JWT-SVID issued", "spiffe_id", svid.ID.String(), "kid", svid.KeyID,
				"audiences", len(req.GetAudience()), "expires_at", svid.ExpiresAt.UTC().Format(time.RFC3339), "peer", grpcx.PeerAddr(ctx))
			return &meshcav1.MintJWTSVIDResponse{SpiffeId: svid.ID.String(), Token: svid.Token, ExpiresAtUnix: svid.ExpiresAt.Unix()}, nil
		}
		err = mintErr
	}
	return nil, j.srv.status(ctx, "JWT-SVID request", err)
}
