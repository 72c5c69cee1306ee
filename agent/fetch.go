// Package agent is meshca's workload-side half: it keeps private keys local,
// fetches certificates from an issuer, and (in later work) serves them over
// SDS and the SPIFFE Workload API. Keys it generates never leave the process
// unless the operator asks for files on disk.
package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/meshca/meshca/ca"
)

// Key types an agent can generate.
const (
	KeyECP256  = "ec-p256"
	KeyRSA2048 = "rsa-2048"
)

// GenerateKey creates a private key of the given type (KeyECP256 when empty).
func GenerateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "", KeyECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("unknown key type %q (want %s or %s)", keyType, KeyECP256, KeyRSA2048)
	}
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Address is the issuer's host:port. Required.
	Address string
	// ServerName overrides the TLS server name; empty means the host part of
	// Address.
	ServerName string
	// Roots verify the issuer's serving certificate and every chain it
	// returns. Required.
	Roots *ca.Bundle
	// ClusterID is sent as "clusterid" metadata; empty means the issuer's
	// local cluster.
	ClusterID string
}

// Client requests certificates over the Istio CA API. It is safe for
// concurrent use; Close releases its connection.
type Client struct {
	cfg  ClientConfig
	conn *grpc.ClientConn
	api  pb.IstioCertificateServiceClient
}

// NewClient prepares a TLS connection to the issuer; it does not block.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("issuer address is required")
	}
	if cfg.Roots == nil {
		return nil, errors.New("CA bundle is required")
	}
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("issuer address %q: %w", cfg.Address, err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = strings.Trim(host, "[]")
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.Roots.Pool(), ServerName: cfg.ServerName}
	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		return nil, fmt.Errorf("connect to issuer %s: %w", cfg.Address, err)
	}
	return &Client{cfg: cfg, conn: conn, api: pb.NewIstioCertificateServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// SVID is a workload certificate with its private key.
type SVID struct {
	// Chain is the leaf followed by its intermediates (no root).
	Chain []*x509.Certificate
	// Key is the leaf's private key; it was generated locally.
	Key crypto.Signer
	// Roots are the trust anchors the chain verified against.
	Roots []*x509.Certificate
}

// Fetch sends a CSR for key, authenticated by token, and returns the verified
// result. The chain must verify to the configured roots and its leaf must
// carry key's public key and exactly one SPIFFE ID.
func (c *Client) Fetch(ctx context.Context, key crypto.Signer, token string, ttl time.Duration) (*SVID, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	md := metadata.Pairs("authorization", "Bearer "+token)
	if c.cfg.ClusterID != "" {
		md.Set("clusterid", c.cfg.ClusterID)
	}
	resp, err := c.api.CreateCertificate(metadata.NewOutgoingContext(ctx, md), &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		ValidityDuration: int64(ttl / time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", c.cfg.Address, err)
	}
	return c.verify(resp.GetCertChain(), key)
}

func (c *Client) verify(pemChain []string, key crypto.Signer) (*SVID, error) {
	if len(pemChain) < 2 {
		return nil, fmt.Errorf("issuer returned %d certificates, want leaf ... root", len(pemChain))
	}
	certs := make([]*x509.Certificate, 0, len(pemChain))
	for i, p := range pemChain {
		cert, err := pemutil.ParseCertificate([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("issuer response certificate %d: %w", i, err)
		}
		certs = append(certs, cert)
	}
	leaf := certs[0]
	if !keyutil.Equal(leaf.PublicKey, key.Public()) {
		return nil, errors.New("issued certificate does not carry our public key")
	}
	if len(leaf.URIs) != 1 {
		return nil, fmt.Errorf("issued certificate has %d URI SANs, want one SPIFFE ID", len(leaf.URIs))
	}
	inters := x509.NewCertPool()
	for _, c := range certs[1 : len(certs)-1] {
		inters.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: c.cfg.Roots.Pool(), Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, fmt.Errorf("issued certificate does not verify against the CA bundle: %w", err)
	}
	return &SVID{Chain: certs[:len(certs)-1], Key: key, Roots: c.cfg.Roots.Roots()}, nil
}

// ReadToken reads a bearer token file, as kubelet writes projected tokens.
// It is re-read for every request because kubelet rotates it.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}
