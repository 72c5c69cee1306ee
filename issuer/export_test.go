package issuer

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// ServedBundle returns what BundleService serves, GetBundle and watches
// alike, from src with the issuer's JWT authorities jwts in td: for tests
// that run on fake time, where no gRPC server can run.
func ServedBundle(src BundleSource, jwts JWTSource, td spiffeid.TrustDomain) *trust.TrustBundle {
	b := &bundleService{src: src, jwts: jwts, td: td}
	tb, _, _, _ := b.current()
	return tb
}
