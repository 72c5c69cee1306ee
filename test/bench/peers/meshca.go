package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"
)

// meshcaServer is a running `meshca dev`.
type meshcaServer struct {
	*server
	addr, dataDir string
	signer        jose.Signer
	conns         []*grpc.ClientConn
}

// startMeshca runs `meshca dev` in dir, on PostgreSQL when dsn is set,
// else on SQLite in its data directory.
func startMeshca(name, bin, dir, dsn string) (*meshcaServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	args := []string{"dev", "--listen", addr, "--data-dir", dataDir}
	if dsn != "" {
		args = append(args, "--store-dsn", dsn)
	}
	s, err := startServer(name, dir, bin, nil, args...)
	if err != nil {
		return nil, err
	}
	m := &meshcaServer{server: s, addr: addr, dataDir: dataDir}
	err = s.waitFor(60*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(dataDir, "bundle.pem")); err != nil {
			return err
		}
		return canConnect("tcp", addr)
	})
	if err == nil {
		m.signer, err = loadDevSigner(filepath.Join(dataDir, "dev-token-key.pem"))
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return m, nil
}

// loadDevSigner reads the dev token key `meshca dev` keeps in its data
// directory (PKCS#8 PEM) and returns an ES256 signer whose key ID is the
// RFC 7638 thumbprint, as `meshca dev token` signs.
func loadDevSigner(path string) (jose.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: %T, want an ECDSA key", path, k)
	}
	return es256Signer(key)
}

func es256Signer(key *ecdsa.PrivateKey) (jose.Signer, error) {
	kid, err := thumbprint(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
}

func thumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// devIssuer is the issuer of meshca's dev tokens.
const devIssuer = "https://meshca.dev.invalid"

// token mints a dev token for w: the claims of a Kubernetes projected
// service-account token, audience meshca, with a unique jti.
func (m *meshcaServer) token(w workload, now time.Time) (string, error) {
	claims := map[string]any{
		"iss": devIssuer, "sub": "system:serviceaccount:" + w.ns + ":" + w.sa, "aud": []string{"meshca"},
		"exp": now.Add(time.Hour).Unix(), "nbf": now.Unix(), "iat": now.Unix(), "jti": randomID(),
		"kubernetes.io": map[string]any{
			"namespace":      w.ns,
			"serviceaccount": map[string]string{"name": w.sa, "uid": "uid-" + w.ns + "-" + w.sa},
		},
	}
	return signJWT(m.signer, claims)
}

func signJWT(s jose.Signer, claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// clients returns one issueFunc per workload, each on its own gRPC
// connection (TLS, HTTP/2) to the Istio CA API. With fresh set, every
// request carries a newly minted token; else each client mints one token
// and reuses it, as an agent does.
func (m *meshcaServer) clients(ws []workload, fresh bool) ([]issueFunc, error) {
	bundle, err := os.ReadFile(filepath.Join(m.dataDir, "bundle.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("no certificate in %s/bundle.pem", m.dataDir)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	out := make([]issueFunc, len(ws))
	for i, w := range ws {
		conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, err
		}
		m.conns = append(m.conns, conn)
		client := pb.NewIstioCertificateServiceClient(conn)
		tok, err := m.token(w, time.Now())
		if err != nil {
			return nil, err
		}
		req := &pb.IstioCertificateRequest{Csr: w.csrPEM, ValidityDuration: 3600}
		out[i] = func(ctx context.Context) error {
			if fresh {
				if tok, err = m.token(w, time.Now()); err != nil {
					return err
				}
			}
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
			resp, err := client.CreateCertificate(ctx, req)
			if err != nil {
				return err
			}
			if len(resp.GetCertChain()) < 2 {
				return errNoCert
			}
			return nil
		}
	}
	return out, nil
}

func (m *meshcaServer) close() {
	for _, c := range m.conns {
		c.Close()
	}
	m.stop()
}
