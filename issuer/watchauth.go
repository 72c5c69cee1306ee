package issuer

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/meshca/meshca/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// authenticateWatch identifies the caller of a bundle watch by a workload
// credential: the bearer token of the Istio CA API ("authorization"
// metadata, with "clusterid"), attested as CreateCertificate attests it,
// or, without one, a TLS client certificate that is an X509-SVID of this
// issuer's trust domain under its current roots. A revoked identity is
// refused. Errors wrap ErrUnauthenticated, ErrPermissionDenied or
// ErrUnavailable.
func (iss *Issuer) authenticateWatch(ctx context.Context) (spiffeid.ID, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if firstValue(md, "authorization") != "" {
		token, err := bearerToken(md)
		if err != nil {
			return spiffeid.ID{}, err
		}
		_, id, err := iss.identify(ctx, token, firstValue(md, "clusterid"))
		return id, err
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("%w: no peer", ErrUnauthenticated)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: neither a bearer token nor a client certificate", ErrUnauthenticated)
	}
	id, err := iss.verifySVID(info.State.PeerCertificates)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if err := iss.checkRevoked(id); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// verifySVID checks that certs (leaf first, then intermediates, as a TLS
// client sent them) are an X509-SVID for client authentication that chains
// to the issuer's current roots and names a SPIFFE ID of its trust domain.
// The roots' and intermediates' name constraints keep other trust domains'
// intermediates from vouching for this one.
func (iss *Issuer) verifySVID(certs []*x509.Certificate) (spiffeid.ID, error) {
	leaf := certs[0]
	inters := x509.NewCertPool()
	for _, c := range certs[1:] {
		inters.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: iss.Bundle().Pool(), Intermediates: inters, CurrentTime: iss.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: client certificate serial %s: %w", ErrUnauthenticated, trust.SerialHex(leaf.SerialNumber), err)
	}
	if leaf.IsCA || len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("%w: client certificate serial %s is not an X509-SVID", ErrUnauthenticated, trust.SerialHex(leaf.SerialNumber))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: client certificate URI: %w", ErrUnauthenticated, err)
	}
	if id.TrustDomain() != iss.cfg.TrustDomain {
		return spiffeid.ID{}, fmt.Errorf("%w: client certificate %s is not of trust domain %s", ErrUnauthenticated, id, iss.cfg.TrustDomain.Name())
	}
	return id, nil
}
