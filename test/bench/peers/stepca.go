package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// stepProvisioner is the JWK provisioner's name, the "iss" of its tokens.
const stepProvisioner = "bench"

// stepServer is a running step-ca.
type stepServer struct {
	*server
	addr   string
	roots  *x509.CertPool
	signer jose.Signer
	http   []*http.Client
}

// startStepCA writes a PKI (P-256 root and intermediate, as `step ca init`
// makes), a JWK provisioner and ca.json into dir, and runs step-ca on it
// with its default embedded database (Badger).
func startStepCA(bin, dir string) (*stepServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	roots, provKey, err := writeStepConfig(dir, addr)
	if err != nil {
		return nil, err
	}
	signer, err := es256Signer(provKey)
	if err != nil {
		return nil, err
	}
	s, err := startServer("step-ca", dir, bin, nil, filepath.Join(dir, "ca.json"))
	if err != nil {
		return nil, err
	}
	st := &stepServer{server: s, addr: addr, roots: roots, signer: signer}
	hc := st.newHTTPClient()
	err = s.waitFor(60*time.Second, func() error {
		resp, err := hc.Get("https://" + addr + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	})
	hc.CloseIdleConnections()
	if err != nil {
		s.stop()
		return nil, err
	}
	return st, nil
}

// writeStepConfig writes root_ca.crt, intermediate_ca.crt/.key and
// ca.json into dir and returns the root pool and the provisioner's key.
func writeStepConfig(dir, addr string) (*x509.CertPool, *ecdsa.PrivateKey, error) {
	rootKey, intKey, provKey := mustKey(), mustKey(), mustKey()
	now := time.Now()
	root := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench step-ca root"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, err
	}
	root, _ = x509.ParseCertificate(rootDER)
	inter := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bench step-ca intermediate"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
		MaxPathLen: 0, MaxPathLenZero: true,
	}
	intDER, err := x509.CreateCertificate(rand.Reader, inter, root, &intKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, err
	}
	intKeyDER, err := x509.MarshalECPrivateKey(intKey)
	if err != nil {
		return nil, nil, err
	}
	files := map[string][]byte{
		"root_ca.crt":         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		"intermediate_ca.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: intDER}),
		"intermediate_ca_key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: intKeyDER}),
	}
	conf, err := stepCAJSON(dir, addr, &provKey.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	files["ca.json"] = conf
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, provKey, nil
}

// stepCAJSON is the ca.json `step ca init` writes for a standalone CA,
// with one JWK provisioner whose certificates last an hour by default.
func stepCAJSON(dir, addr string, provPub *ecdsa.PublicKey) ([]byte, error) {
	kid, err := thumbprint(provPub)
	if err != nil {
		return nil, err
	}
	jwk := jose.JSONWebKey{Key: provPub, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}
	conf := map[string]any{
		"root":     filepath.Join(dir, "root_ca.crt"),
		"crt":      filepath.Join(dir, "intermediate_ca.crt"),
		"key":      filepath.Join(dir, "intermediate_ca_key"),
		"address":  addr,
		"dnsNames": []string{"127.0.0.1"},
		"logger":   map[string]string{"format": "text"},
		"db":       map[string]string{"type": "badgerv2", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{
				"type": "JWK", "name": stepProvisioner, "key": jwk,
				"claims": map[string]string{
					"minTLSCertDuration": "5m", "maxTLSCertDuration": "24h", "defaultTLSCertDuration": "1h",
				},
			}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

func mustKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// newHTTPClient returns a client with a transport of its own holding at
// most one connection (HTTP/1.1 keep-alive over TLS).
func (st *stepServer) newHTTPClient() *http.Client {
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: st.roots, ServerName: "127.0.0.1"},
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
	}, Timeout: 30 * time.Second}
	st.http = append(st.http, c)
	return c
}

// ott mints the one-time token `step ca token` makes for w: signed by the
// JWK provisioner's key, audience the sign endpoint, the SPIFFE ID as
// subject and only SAN, a unique jti (step-ca records it and refuses reuse).
func (st *stepServer) ott(w workload, now time.Time) (string, error) {
	return signJWT(st.signer, map[string]any{
		"iss": stepProvisioner, "sub": w.id.String(), "aud": "https://" + st.addr + "/1.0/sign",
		"nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": randomID(),
		"sans": []string{w.id.String()},
	})
}

// clients returns one issueFunc per workload: POST /1.0/sign with the CSR
// and a fresh one-time token, on the client's own connection.
func (st *stepServer) clients(ws []workload) []issueFunc {
	out := make([]issueFunc, len(ws))
	url := "https://" + st.addr + "/1.0/sign"
	for i, w := range ws {
		hc := st.newHTTPClient()
		out[i] = func(ctx context.Context) error {
			ott, err := st.ott(w, time.Now())
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"csr": w.csrPEM, "ott": ott})
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusCreated {
				return fmt.Errorf("sign: %s: %.200s", resp.Status, b)
			}
			var out struct {
				Crt string `json:"crt"`
			}
			if err := json.Unmarshal(b, &out); err != nil || out.Crt == "" {
				return errNoCert
			}
			return nil
		}
	}
	return out
}

func (st *stepServer) close() {
	for _, c := range st.http {
		c.CloseIdleConnections()
	}
	st.stop()
}
