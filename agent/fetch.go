package agent

import (
	"bytes"
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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

// Key types an agent can generate.
const (
	KeyECP256  = "ec-p256"
	KeyRSA2048 = "rsa-2048"
)

// GenerateKey creates a private key of the given type (KeyECP256 when empty).
func GenerateKey(keyType string) (crypto.Signer, error) {
	gen, err := generateKeyFunc(keyType)
	if err != nil {
		return nil, err
	}
	return gen()
}

// generateKeyFunc returns a generator of keys of the given type (KeyECP256
// when empty), or an error for an unknown type.
func generateKeyFunc(keyType string) (func() (crypto.Signer, error), error) {
	switch keyType {
	case "", KeyECP256:
		return func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }, nil
	case KeyRSA2048:
		return func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }, nil
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
	// returns. Required; SetRoots replaces them.
	Roots *trust.Bundle
	// ClusterID is sent as "clusterid" metadata; empty means the issuer's
	// local cluster.
	ClusterID string
	// IssuerCluster is the cluster whose issuer the client requires: during
	// the TLS handshake, before any token is sent, the serving chain's
	// intermediate must name it (trust.IssuerServerID), not be revoked by a
	// held root CRL (SetCRLs), and chain to Roots. Empty means ClusterID;
	// when both are empty, any cluster's issuer under Roots is accepted.
	IssuerCluster string
	// TokenFile holds the bearer token that authenticates bundle watches,
	// read for every watch (Fetch is given its token). Empty sends none:
	// meshca's issuer then refuses the watch.
	TokenFile string
	// DNSNames are asked for as DNS SANs in every CSR; an issued leaf must
	// carry exactly these and verify as a server certificate for each.
	// The issuer grants them only to identities its configuration names
	// (istiod's serving names). Nil asks for none.
	DNSNames []string
}

// reconnectBackoff paces gRPC's reconnection to the issuer; its cap matches
// the rotation loop's retry cap.
var reconnectBackoff = backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 30 * time.Second}

// Client requests certificates over the Istio CA API. It is safe for
// concurrent use; Close releases its connection.
type Client struct {
	cfg ClientConfig

	mu    sync.Mutex
	roots *trust.Bundle
	// crls are the held root CRLs (SetCRLs) that verified against roots;
	// crlDER is their DER, to tell a change.
	crls   []*x509.RevocationList
	crlDER [][]byte
	conn   *grpc.ClientConn

	// check is what every handshake verifies, CRLs included: it follows
	// SetCRLs without a new connection. peer is the chain the issuer of the
	// current connection presented at its last handshake.
	check atomic.Pointer[trust.ServerCheck]
	peer  atomic.Pointer[[]*x509.Certificate]
	// tokenFile is ClientConfig.TokenFile until SetTokenFile.
	tokenFile atomic.Pointer[string]
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
	if cfg.IssuerCluster == "" {
		cfg.IssuerCluster = cfg.ClusterID
	}
	c := &Client{cfg: cfg}
	c.tokenFile.Store(&cfg.TokenFile)
	if err := c.SetRoots(cfg.Roots); err != nil {
		return nil, err
	}
	return c, nil
}

// SetRoots makes roots the trust anchors for the issuer's serving
// certificate and for issued chains. When they differ from the current ones
// the connection is replaced, which cancels requests in flight on the old
// one.
func (c *Client) SetRoots(roots *trust.Bundle) error {
	if roots == nil {
		return errors.New("CA bundle is required")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.roots != nil && bytes.Equal(c.roots.PEM(), roots.PEM()) {
		return nil
	}
	return c.connectLocked(roots, c.crls)
}

// connectLocked replaces the connection with one that trusts roots and
// refuses an issuer whose intermediate one of crls revokes. The caller
// holds mu.
func (c *Client) connectLocked(roots *trust.Bundle, crls []*x509.RevocationList) error {
	c.check.Store(&trust.ServerCheck{Cluster: c.cfg.IssuerCluster, CRLs: crls})
	c.peer.Store(nil)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots.Pool(), ServerName: c.cfg.ServerName,
		VerifyConnection: c.verifyConnection}
	conn, err := grpc.NewClient(c.cfg.Address, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: 10 * time.Second}))
	if err != nil {
		return fmt.Errorf("connect to issuer %s: %w", c.cfg.Address, err)
	}
	if c.conn != nil {
		_ = c.conn.Close() // nothing to do about a failed close of a replaced connection
	}
	c.roots, c.crls, c.conn = roots, crls, conn
	return nil
}

// SetCRLs gives the client the CRLs it holds (DER). Those signed by one of
// its roots, which list revoked intermediates, make it refuse an issuer
// whose intermediate they list; the others are ignored. When they change,
// a connection to an issuer they now revoke is replaced.
// Until the first call the client knows no revocation: it checks the
// issuer's identity and chain only.
func (c *Client) SetCRLs(ders [][]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var crls []*x509.RevocationList
	var kept [][]byte
	for _, der := range ders {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			continue // the Manager verified what it holds; a stranger is no root CRL
		}
		if slices.ContainsFunc(c.roots.Roots(), func(r *x509.Certificate) bool { return crl.CheckSignatureFrom(r) == nil }) {
			crls, kept = append(crls, crl), append(kept, der)
		}
	}
	// The order of ders carries no meaning; compare sets.
	slices.SortFunc(kept, bytes.Compare)
	if slices.EqualFunc(kept, c.crlDER, bytes.Equal) {
		return nil
	}
	c.crls, c.crlDER = crls, kept
	c.check.Store(&trust.ServerCheck{Cluster: c.cfg.IssuerCluster, CRLs: crls})
	// Every agent of a mesh receives the same root CRLs at about the same
	// time: reconnecting all of them on every re-signed CRL would be a
	// thundering herd. Only a connection to an issuer the new CRLs revoke
	// is replaced.
	if peer := c.peer.Load(); peer != nil {
		if err := c.check.Load().VerifyChain(*peer); err != nil {
			return c.connectLocked(c.roots, crls)
		}
	}
	return nil
}

// verifyConnection is the handshake's check of which issuer was reached
// (ServerCheck, with the CRLs held now); it remembers the accepted chain.
func (c *Client) verifyConnection(cs tls.ConnectionState) error {
	check := c.check.Load()
	for _, chain := range cs.VerifiedChains {
		if check.VerifyChain(chain) == nil {
			c.peer.Store(&chain)
			return nil
		}
	}
	return check.VerifyConnection(cs)
}

// setTokenFile makes every later bundle watch read its token from path.
func (c *Client) setTokenFile(path string) { c.tokenFile.Store(&path) }

// WatchBundle opens the issuer's trust bundle watch
// (meshca.v1.BundleService/WatchBundle) on the connection Fetch uses, so the
// issuer is authenticated by the same roots, with the token of
// ClientConfig.TokenFile, which the issuer requires. knownSequence is the
// sequence of the bundle already held (0: none). The stream ends when ctx
// is done, and also when SetRoots replaces the connection or the issuer
// closes it (it does after a maximum age); the caller then opens another.
func (c *Client) WatchBundle(ctx context.Context, knownSequence uint64) (BundleStream, error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	ctx, err := c.withTokenFile(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch bundle: %w", err)
	}
	stream, err := meshcav1.NewBundleServiceClient(conn).WatchBundle(ctx, &meshcav1.WatchBundleRequest{KnownSequence: knownSequence})
	if err != nil {
		return nil, fmt.Errorf("issuer %s: watch bundle: %w", c.cfg.Address, err)
	}
	return stream, nil
}

// withTokenFile returns ctx with the outgoing metadata of a call
// authenticated by the token of ClientConfig.TokenFile (none when it is
// empty) and the cluster ID.
func (c *Client) withTokenFile(ctx context.Context) (context.Context, error) {
	var md metadata.MD
	if tokenFile := *c.tokenFile.Load(); tokenFile != "" {
		token, err := ReadToken(tokenFile)
		if err != nil {
			return nil, err
		}
		md = metadata.Pairs("authorization", "Bearer "+token)
	}
	if c.cfg.ClusterID != "" {
		md = metadata.Join(md, metadata.Pairs("clusterid", c.cfg.ClusterID))
	}
	if md == nil {
		return ctx, nil
	}
	return metadata.NewOutgoingContext(ctx, md), nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.Close()
}

// SVID is a workload certificate with its private key.
type SVID struct {
	// Chain is the leaf followed by its intermediates (no root).
	Chain []*x509.Certificate
	// Key is the leaf's private key; it was generated locally.
	Key crypto.Signer
	// Roots are the trust anchors the chain verified against: the
	// configured roots.
	Roots []*x509.Certificate
}

// Fetch sends a CSR for key, authenticated by token, and returns the verified
// result. The leaf must carry key's public key and exactly one URI SAN, a
// SPIFFE ID; it must not be a CA (no basic constraints CA flag, no
// keyCertSign or cRLSign usage) and must allow digitalSignature; the chain
// must verify to the configured roots for client authentication. Which
// SPIFFE ID is the caller's to check (Manager does). A root that ends the
// response but is not configured is never trusted (istio-agent would trust
// it): an issuer holds an intermediate constrained to one trust domain, and
// letting it add roots would turn one compromised issuer into a root for
// every trust domain. New roots reach agents through the CA bundle file
// and the bundle watch (bundleWatcher), which Manager turns into SetRoots.
func (c *Client) Fetch(ctx context.Context, key crypto.Signer, token string, ttl time.Duration) (*SVID, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: c.cfg.DNSNames}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	md := metadata.Pairs("authorization", "Bearer "+token)
	if c.cfg.ClusterID != "" {
		md.Set("clusterid", c.cfg.ClusterID)
	}
	c.mu.Lock()
	conn, roots := c.conn, c.roots
	c.mu.Unlock()
	// Each Fetch is a deliberate attempt, paced by the caller: after failed
	// connections, connect now rather than after gRPC's own reconnect
	// backoff. Only then: ResetConnectBackoff reads the channel's
	// subchannels without a lock (grpc-go 1.85), which races with their
	// creation when the channel leaves idle mode, as it does when a bundle
	// watch starts at the same time.
	if conn.GetState() == connectivity.TransientFailure {
		conn.ResetConnectBackoff()
	}
	resp, err := createCertificate(metadata.NewOutgoingContext(ctx, md), conn, &certificateRequest{
		CSR:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		ValidityDuration: int64(ttl / time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", c.cfg.Address, err)
	}
	return verifyResponse(resp.CertChain, key, roots, c.cfg.DNSNames)
}

func verifyResponse(pemChain []string, key crypto.Signer, roots *trust.Bundle, dnsNames []string) (*SVID, error) {
	if len(pemChain) < 2 {
		return nil, fmt.Errorf("issuer returned %d certificates, want leaf ... root", len(pemChain))
	}
	certs := make([]*x509.Certificate, 0, len(pemChain))
	for i, p := range pemChain {
		cert, err := trust.ParseCertificate([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("issuer response certificate %d: %w", i, err)
		}
		certs = append(certs, cert)
	}
	leaf := certs[0]
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("issued certificate does not carry our public key")
	}
	if err := checkLeaf(leaf); err != nil {
		return nil, err
	}
	if !slices.Equal(leaf.DNSNames, dnsNames) {
		return nil, fmt.Errorf("issued certificate has DNS names %q, want %q", leaf.DNSNames, dnsNames)
	}
	inters := x509.NewCertPool()
	for _, c := range certs[1 : len(certs)-1] {
		inters.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots.Pool(), Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, fmt.Errorf("issued certificate does not verify against the CA bundle: %w", err)
	}
	for _, n := range dnsNames {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots.Pool(), Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return nil, fmt.Errorf("issued certificate does not verify as a server certificate for %s: %w", n, err)
		}
	}
	return &SVID{Chain: certs[:len(certs)-1], Key: key, Roots: roots.Roots()}, nil
}

// checkLeaf checks what x509svid.Verify (go-spiffe) checks of a leaf, plus
// the digitalSignature usage every TLS key needs.
func checkLeaf(leaf *x509.Certificate) error {
	if len(leaf.URIs) != 1 {
		return fmt.Errorf("issued certificate has %d URI SANs, want one SPIFFE ID", len(leaf.URIs))
	}
	if _, err := spiffeid.FromURI(leaf.URIs[0]); err != nil {
		return fmt.Errorf("issued certificate: URI SAN is not a SPIFFE ID: %w", err)
	}
	if leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return errors.New("issued certificate is a CA certificate, want a leaf")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return errors.New("issued certificate lacks the digitalSignature key usage")
	}
	return nil
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
