package federation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// OIDC discovery for cloud federation: clouds' security token services
// accept a JWT-SVID as an OIDC ID token when they can fetch its issuer's
// discovery document and keys. The endpoint serves both on its listener
// when an issuer URL is configured; JWT-SVIDs then carry that URL as "iss".

// Paths of the OIDC discovery document and of the JWKS it names.
const (
	oidcConfigPath = "/.well-known/openid-configuration"
	oidcKeysPath   = "/keys"
)

// maxOIDCKeys bounds the keys one JWKS response carries: a trust domain
// has one key per issuer replica and intermediate, so more means something
// is wrong, and a client must not be handed an unbounded document.
const maxOIDCKeys = 256

// CheckOIDCIssuer reports what makes issuer unfit as an OIDC issuer URL:
// https, a host, no query or fragment (OpenID Connect Discovery 1.0).
func CheckOIDCIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	switch {
	case err != nil:
		return fmt.Errorf("OIDC issuer URL: %w", err)
	case u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("OIDC issuer URL %q: want https://host[/path]", issuer)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("OIDC issuer URL %q: no user, query or fragment allowed", issuer)
	}
	return nil
}

// oidcHandler serves the discovery document and the JWKS of one trust
// domain's JWT authorities, converting once per trust bundle.
type oidcHandler struct {
	td     spiffeid.TrustDomain
	src    BundleSource
	config []byte
	maxAge time.Duration
	cache  atomic.Pointer[convertedJWKS]
}

type convertedJWKS struct {
	from *trust.TrustBundle
	body []byte
}

// newOIDCHandler returns the handler for issuer, whose keys are td's in
// src; responses may be cached for maxAge.
func newOIDCHandler(issuer string, td spiffeid.TrustDomain, src BundleSource, maxAge time.Duration) (*oidcHandler, error) {
	doc := map[string]any{
		"issuer":                                issuer,
		"jwks_uri":                              strings.TrimSuffix(issuer, "/") + oidcKeysPath,
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("OIDC discovery document: %w", err)
	}
	return &oidcHandler{td: td, src: src, config: body, maxAge: maxAge}, nil
}

func (h *oidcHandler) serveConfig(w http.ResponseWriter, _ *http.Request) {
	h.write(w, h.config)
}

func (h *oidcHandler) serveKeys(w http.ResponseWriter, _ *http.Request) {
	body, err := h.jwks()
	if err != nil {
		http.Error(w, "no keys yet", http.StatusServiceUnavailable)
		return
	}
	h.write(w, body)
}

func (h *oidcHandler) write(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(h.maxAge/time.Second)))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body) // HEAD: the server discards the body
}

// jwks returns the JWKS of the trust domain's ES256 keys (ECDSA P-256),
// each with use "sig" and alg "ES256", by key ID.
func (h *oidcHandler) jwks() ([]byte, error) {
	tb, _ := h.src.Current()
	if tb == nil {
		return nil, errors.New("no trust bundle yet")
	}
	if c := h.cache.Load(); c != nil && c.from == tb {
		return c.body, nil
	}
	d, ok := tb.Domain(h.td)
	if !ok || d.Federated {
		return nil, fmt.Errorf("trust bundle %d has no own trust domain %q", tb.Sequence, h.td)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, a := range d.JWTAuthorities {
		pub, ok := a.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() || len(set.Keys) == maxOIDCKeys {
			continue
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: pub, KeyID: a.KeyID, Use: "sig", Algorithm: string(jose.ES256)})
	}
	body, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	h.cache.Store(&convertedJWKS{from: tb, body: body})
	return body, nil
}
