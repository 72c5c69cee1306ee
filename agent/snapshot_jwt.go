package agent

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// jwtKeyUse is the JWK "use" of a JWT-SVID verification key (SPIFFE Trust
// Domain and Bundle spec).
const jwtKeyUse = "jwt-svid"

// setJWTBundles records the JWT authorities of domains (served as they are:
// the caller verified them, see manager.SetTrustBundle) and of the own
// trust domain, which is present even without a key, so that a workload
// always finds a JWT bundle for it. It runs after setSVID.
func (s *snapshot) setJWTBundles(domains []trust.DomainBundle) error {
	keys := map[spiffeid.TrustDomain][]trust.JWTAuthority{}
	if own := s.id.TrustDomain(); !own.IsZero() {
		keys[own] = nil
	}
	for _, d := range domains {
		keys[d.TrustDomain] = append(keys[d.TrustDomain], d.JWTAuthorities...)
	}
	if len(keys) == 0 {
		return nil
	}
	names := make([]spiffeid.TrustDomain, 0, len(keys))
	for td := range keys {
		names = append(names, td)
	}
	slices.SortFunc(names, func(x, y spiffeid.TrustDomain) int { return strings.Compare(x.Name(), y.Name()) })
	s.jwtBundles = make(map[string][]byte, len(keys))
	bundles := make([]*jwtbundle.Bundle, 0, len(keys))
	parts := make([][]byte, 0, 2*len(keys))
	for _, td := range names {
		jwks, b, err := encodeJWKS(td, keys[td])
		if err != nil {
			return fmt.Errorf("snapshot: JWT bundle of %s: %w", td.Name(), err)
		}
		s.jwtBundles[td.IDString()] = jwks
		bundles = append(bundles, b)
		s.jwtKeys += len(b.JWTAuthorities())
		parts = append(parts, []byte(td.IDString()), jwks)
	}
	s.jwtSet = jwtbundle.NewSet(bundles...)
	s.jwtVersion = shortHash(parts...)
	return nil
}

// encodeJWKS returns the JWKS document of a trust domain's JWT authorities
// ({"keys":[...]}, each key with "kid" and "use":"jwt-svid", sorted by key
// ID, one per ID) and the same keys as a go-spiffe bundle.
func encodeJWKS(td spiffeid.TrustDomain, auths []trust.JWTAuthority) ([]byte, *jwtbundle.Bundle, error) {
	b := jwtbundle.New(td)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, a := range auths {
		if b.HasJWTAuthority(a.KeyID) {
			continue
		}
		if err := b.AddJWTAuthority(a.KeyID, a.PublicKey); err != nil {
			return nil, nil, err
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: a.PublicKey, KeyID: a.KeyID, Use: jwtKeyUse})
	}
	slices.SortFunc(set.Keys, func(x, y jose.JSONWebKey) int { return strings.Compare(x.KeyID, y.KeyID) })
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, nil, err
	}
	return jwks, b, nil
}

// JWTBundles returns the JWT bundles (JWKS JSON) by trust domain ID
// (spiffe://td); nil before the agent knows any trust domain. The map and
// its values are shared and must not be modified.
func (s *snapshot) JWTBundles() map[string][]byte { return s.jwtBundles }

// JWTVersion identifies the JWT bundles (a hash prefix over trust domains
// and keys); "" when there are none.
func (s *snapshot) JWTVersion() string { return s.jwtVersion }

// jwtSource returns the JWT authorities that validate JWT-SVIDs; it is
// empty before the agent knows any.
func (s *snapshot) jwtSource() jwtbundle.Source {
	if s.jwtSet == nil {
		return jwtbundle.NewSet()
	}
	return s.jwtSet
}

// jwtAuthorityCount returns how many JWT authorities are served, over all
// trust domains.
func (s *snapshot) jwtAuthorityCount() int { return s.jwtKeys }
