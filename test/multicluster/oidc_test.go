package multicluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/meshca/meshca/internal/testkit"
)

// TestOIDCDiscoveryServed runs a root whose bundle endpoint has an OIDC
// issuer URL configured: its listener serves the discovery document and a
// JWKS go-jose parses, with caching headers, and refuses other methods.
func TestOIDCDiscoveryServed(t *testing.T) {
	fed := testkit.FreeAddr(t)
	webCA, webCert, webKey := webPKI(t, t.TempDir())
	const issuer = "https://oidc.a.example/mesh"
	root := startRoot(t, fmt.Sprintf(`federation:
  listen: %s
  trustDomain: a.example
  profile: https_web
  certFile: %s
  keyFile: %s
  oidc: {issuerURL: %q}
`, fed, webCert, webKey, issuer))
	root.WaitListening(t, fed)

	caPEM, err := os.ReadFile(webCA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(client.CloseIdleConnections)
	do := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, "https://"+fed+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}

	resp, body := do(http.MethodGet, "/.well-known/openid-configuration")
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") == "" || json.Unmarshal(body, &doc) != nil ||
		doc.Issuer != issuer || doc.JWKSURI != issuer+"/keys" {
		t.Fatalf("discovery: status %d, Cache-Control %q, body %s", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
	}
	resp, body = do(http.MethodGet, "/keys")
	var set jose.JSONWebKeySet
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &set) != nil {
		t.Fatalf("keys: status %d, body %s", resp.StatusCode, body)
	}
	if resp, _ := do(http.MethodPost, "/keys"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /keys: status %d, want 405", resp.StatusCode)
	}
	// The SPIFFE bundle is still served at /.
	if resp, body := do(http.MethodGet, "/"); resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("bundle: status %d", resp.StatusCode)
	}
}
