package interop

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "istio.io/api/security/v1alpha1"
	"istio.io/istio/security/pkg/pki/util"
)

// legacyAcct is the service account of the workload that keeps its certificate from istiod's CA
// during a migration; serviceAcct's workload gets its certificate from meshca.
const legacyAcct = "legacy"

// istiodRoot is istiod's self-signed CA as istiod creates it for the istio-ca-secret Secret:
// made by Istio's own code (security/pkg/pki/ca.NewSelfSignedIstioCAOptions calls
// util.GenCertKeyFromOptions with these options: RSA-2048, Org = the trust domain, 10 years),
// ca-cert.pem and ca-key.pem (RSA in PKCS#1) as istiod writes them into the Secret.
type istiodRoot struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
	key             crypto.Signer
}

func newIstiodRoot(t *testing.T) *istiodRoot {
	t.Helper()
	certPEM, keyPEM, err := util.GenCertKeyFromOptions(util.CertOptions{
		TTL: 10 * 365 * 24 * time.Hour, Org: trustDomain, IsCA: true, IsSelfSigned: true, RSAKeySize: 2048,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(keyPEM), "BEGIN RSA PRIVATE KEY") {
		t.Fatalf("istiod's ca-key.pem is not PKCS#1: %.40q", keyPEM)
	}
	cert, err := util.ParsePemEncodedCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := util.ParsePemEncodedKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &istiodRoot{certPEM: certPEM, keyPEM: keyPEM, cert: cert, key: key.(crypto.Signer)}
}

// istiodCA stands in for istiod's CA server (security/pkg/server/ca/server.go CreateCertificate)
// for one workload: it signs the CSR with istiod's root through Istio's own util.GenCertFromCSR,
// the call IstioCA.sign makes (security/pkg/pki/ca/ca.go), for the SPIFFE ID istiod would derive
// from the caller's token, and answers leaf then root, as istiod's CA on a self-signed root
// does. It requires a bearer token but does not verify it (no kube-apiserver here); the
// identity it will sign is fixed.
type istiodCA struct {
	pb.UnimplementedIstioCertificateServiceServer
	root *istiodRoot
	id   string
}

func (s *istiodCA) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := md.Get("authorization"); len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		return nil, status.Error(codes.Unauthenticated, "no bearer token")
	}
	csr, err := util.ParsePemEncodedCSR([]byte(req.GetCsr()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if ids, err := util.ExtractIDs(csr.Extensions); err != nil || !slices.Equal(ids, []string{s.id}) {
		return nil, status.Errorf(codes.PermissionDenied, "CSR names %v, want %s", ids, s.id)
	}
	der, err := util.GenCertFromCSR(csr, s.root.cert, csr.PublicKey, s.root.key, []string{s.id},
		time.Duration(req.GetValidityDuration())*time.Second, false)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &pb.IstioCertificateResponse{CertChain: []string{string(leaf), string(s.root.certPEM)}}, nil
}

// serveIstiodCA serves an istiodCA for id on a free loopback port, with a serving certificate
// for 127.0.0.1 signed by the root (istiod's own serving certificate comes from its CA too),
// and returns the port.
func serveIstiodCA(t *testing.T, root *istiodRoot, id string) string {
	t.Helper()
	certPEM, keyPEM, err := util.GenCertKeyFromOptions(util.CertOptions{
		Host: "127.0.0.1", TTL: 24 * time.Hour, IsServer: true, RSAKeySize: 2048, SignerCert: root.cert, SignerPriv: root.key,
	})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})))
	pb.RegisterIstioCertificateServiceServer(srv, &istiodCA{root: root, id: id})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return fmt.Sprint(lis.Addr().(*net.TCPAddr).Port)
}

// issuerProcess is a running `meshca issuer serve`.
type issuerProcess struct {
	*devServer
	devKeyDir string
}

// startIssuer runs `meshca issuer serve` with the CA settings caYAML (root: or intermediate:),
// attesting dev tokens (`meshca dev token --data-dir <devKeyDir>`) for its own cluster, and
// waits until it serves and has written bundle.pem.
func startIssuer(t *testing.T, bin, caYAML string) *issuerProcess {
	t.Helper()
	dir := t.TempDir()
	p := &issuerProcess{devServer: &devServer{dataDir: filepath.Join(dir, "data"), port: freePort(t)}, devKeyDir: filepath.Join(dir, "devkeys")}
	p.bundlePath = filepath.Join(p.dataDir, "bundle.pem")
	addr := net.JoinHostPort("127.0.0.1", p.port)
	cfg := fmt.Sprintf("dataDir: %s\nlisten: %s\ntrustDomain: %s\ncluster: dev\n"+
		"clusters: [{name: dev, attestor: dev, devKeyDir: %s, audiences: [%s]}]\n%s",
		p.dataDir, addr, trustDomain, p.devKeyDir, istioAudience, caYAML)
	cfgPath := filepath.Join(dir, "issuer.yaml")
	writeFile(t, cfgPath, []byte(cfg), 0o600)
	p.proc = startProc(t, "meshca issuer", exec.Command(bin, "issuer", "serve", "--config", cfgPath))
	deadline := time.Now().Add(startTimeout)
	for {
		p.proc.failIfExited(t)
		if roots, ok := readBundle(p.bundlePath); ok && canDial(addr) {
			p.bundleRoots = roots
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshca issuer not serving on %s within %v\n%s", addr, startTimeout, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pluggedIntermediate makes an intermediate CA under root as Istio's tools/certs makes one for
// the cacerts Secret (common.mk: RSA-2048, O=Istio CN=Intermediate CA, DNS SAN
// istiod.istio-system.svc, path length 0, key usage digital signature, non-repudiation, key
// encipherment and certificate signing) and writes the four cacerts files into dir: ca-cert.pem,
// ca-key.pem (PKCS#1, 0600), cert-chain.pem (intermediate then root) and root-cert.pem.
func pluggedIntermediate(t *testing.T, root *istiodRoot, dir string) *x509.Certificate {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{Organization: []string{"Istio"}, CommonName: "Intermediate CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(365 * 24 * time.Hour), DNSNames: []string{"istiod.istio-system.svc"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		IsCA:     true, BasicConstraintsValid: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, priv.Public(), root.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	writeFile(t, filepath.Join(dir, "ca-cert.pem"), certPEM, 0o600)
	writeFile(t, filepath.Join(dir, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}), 0o600)
	writeFile(t, filepath.Join(dir, "cert-chain.pem"), append(certPEM, root.certPEM...), 0o600)
	writeFile(t, filepath.Join(dir, "root-cert.pem"), root.certPEM, 0o600)
	return cert
}

// workloadCredentials is what a pilot-agent serves its Envoy over SDS: default (chain and
// key) and ROOTCA.
type workloadCredentials struct {
	cert   tls.Certificate
	chain  []*x509.Certificate
	rootCA []*x509.Certificate
}

// readSDS reads default and ROOTCA from pa's SDS socket as Envoy would.
func readSDS(t *testing.T, pa *pilotAgent) workloadCredentials {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	sds := dialSDS(t, pa.sdsSocket)
	def, err := sds.fetchSecret(ctx, "default")
	if err != nil {
		t.Fatalf("%v\n%s", err, pa.output())
	}
	rootSecret, err := sds.fetchSecret(ctx, "ROOTCA")
	if err != nil {
		t.Fatalf("%v\n%s", err, pa.output())
	}
	var w workloadCredentials
	if w.chain, err = tlsCertificateOf(def); err != nil {
		t.Fatal(err)
	}
	tc := def.GetTlsCertificate()
	if w.cert, err = tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()); err != nil {
		t.Fatal(err)
	}
	if w.rootCA, err = trustedCAOf(rootSecret); err != nil {
		t.Fatal(err)
	}
	return w
}

// mtls completes a TLS 1.3 handshake in memory between a server holding server.cert and a
// client holding client.cert, each verifying the other's chain against its own ROOTCA (with the
// intermediates the peer sends) for its usage and requiring the peer's SPIFFE ID, as Envoy's
// validation context does. It returns the first failure of either side.
func mtls(server, client workloadCredentials, serverID, clientID string) error {
	verifier := func(roots []*x509.Certificate, usage x509.ExtKeyUsage, wantID string) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no peer certificate")
			}
			if err := verifyLeaf(cs.PeerCertificates, roots, usage); err != nil {
				return err
			}
			if got := urisOf(cs.PeerCertificates[0]); !slices.Equal(got, []string{wantID}) {
				return fmt.Errorf("peer SPIFFE ID %v, want %s", got, wantID)
			}
			return nil
		}
	}
	sConn, cConn := net.Pipe()
	defer sConn.Close()
	defer cConn.Close()
	srv := tls.Server(sConn, &tls.Config{
		Certificates: []tls.Certificate{server.cert}, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13,
		VerifyConnection: verifier(server.rootCA, x509.ExtKeyUsageClientAuth, clientID),
	})
	cli := tls.Client(cConn, &tls.Config{
		Certificates: []tls.Certificate{client.cert}, MinVersion: tls.VersionTLS13,
		// SPIFFE leaves carry no DNS name: the peer is checked by chain and URI SAN alone.
		InsecureSkipVerify: true, VerifyConnection: verifier(client.rootCA, x509.ExtKeyUsageServerAuth, serverID),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.HandshakeContext(ctx) }()
	cerr := cli.HandshakeContext(ctx)
	if cerr != nil {
		_ = cConn.Close() // unblocks the server side
	}
	serr := <-errc
	if cerr != nil {
		return fmt.Errorf("client side: %w (server side: %v)", cerr, serr)
	}
	if serr != nil {
		return fmt.Errorf("server side: %w", serr)
	}
	return nil
}

// TestPilotAgentMigration: during a migration from istiod's CA, a workload whose
// pilot-agent still holds a certificate from istiod's CA and one whose pilot-agent gets its
// certificate from meshca complete mutual TLS both ways, each trusting what its own ROOTCA
// holds. meshca runs (a) on istiod's own self-signed root (istio-ca-secret mounted as root.dir),
// (b) on a plug-in intermediate under that root (Istio's cacerts, no root key).
func TestPilotAgentMigration(t *testing.T) {
	agentBin := pilotAgentBinary(t)
	bin := meshcaBinary(t)
	root := newIstiodRoot(t)
	legacyID := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, namespace, legacyAcct)

	for _, tc := range []struct {
		name string
		// setup writes the CA files into dir and returns the issuer's CA YAML and the CA
		// certificate that must sign meshca's leaves.
		setup func(t *testing.T, dir string) (string, func(*x509.Certificate) error)
	}{
		{"root", func(t *testing.T, dir string) (string, func(*x509.Certificate) error) {
			// The Secret's keys mounted under meshca's file names (Kubernetes: items with path).
			writeFile(t, filepath.Join(dir, "root.pem"), root.certPEM, 0o400)
			writeFile(t, filepath.Join(dir, "root-key.pem"), root.keyPEM, 0o400)
			return fmt.Sprintf("root: {dir: %s}\n", dir), func(ca *x509.Certificate) error {
				if ca.Equal(root.cert) || ca.CheckSignatureFrom(root.cert) != nil {
					return fmt.Errorf("%s is not a meshca intermediate signed by istiod's root", ca.Subject)
				}
				return nil
			}
		}},
		{"cacerts", func(t *testing.T, dir string) (string, func(*x509.Certificate) error) {
			inter := pluggedIntermediate(t, root, dir)
			return fmt.Sprintf("intermediate: {certFile: %[1]s/ca-cert.pem, keyFile: %[1]s/ca-key.pem, chainFile: %[1]s/cert-chain.pem, rootFile: %[1]s/root-cert.pem}\n", dir),
				func(ca *x509.Certificate) error {
					if !ca.Equal(inter) {
						return fmt.Errorf("%s is not cacerts' ca-cert.pem", ca.Subject)
					}
					return nil
				}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caYAML, checkCA := tc.setup(t, t.TempDir())
			iss := startIssuer(t, bin, caYAML)
			if len(iss.bundleRoots) != 1 || !iss.bundleRoots[0].Equal(root.cert) {
				t.Fatalf("meshca's bundle.pem holds %s, want istiod's root alone (the istio-ca-root-cert ConfigMaps keep their content)", subjects(iss.bundleRoots))
			}
			rootPath := filepath.Join(t.TempDir(), "root-cert.pem")
			writeFile(t, rootPath, root.certPEM, 0o644)

			legacyPA := startPilotAgentFor(t, agentBin, pilotAgentSpec{caPort: serveIstiodCA(t, root, legacyID), bundlePath: rootPath, token: "istiod-token", serviceAccount: legacyAcct})
			token := mintToken(t, bin, iss.devKeyDir, namespace, serviceAcct, istioAudience)
			meshcaPA := startPilotAgentFor(t, agentBin, pilotAgentSpec{caPort: iss.port, bundlePath: iss.bundlePath, token: token, serviceAccount: serviceAcct})
			legacy, migrated := readSDS(t, legacyPA), readSDS(t, meshcaPA)

			// pilot-agent's default chain is the whole CA response, root included.
			if len(legacy.chain) != 2 || legacy.chain[0].CheckSignatureFrom(root.cert) != nil || !legacy.chain[1].Equal(root.cert) {
				t.Errorf("istiod-held default is %s, want a leaf signed by istiod's root, then the root", subjects(legacy.chain))
			}
			if len(migrated.chain) != 3 || !migrated.chain[2].Equal(root.cert) {
				t.Fatalf("meshca default is %s, want leaf, the CA that signed it, istiod's root", subjects(migrated.chain))
			}
			if err := checkCA(migrated.chain[1]); err != nil {
				t.Error(err)
			}
			for name, w := range map[string]workloadCredentials{"istiod-held": legacy, "meshca": migrated} {
				if len(w.rootCA) != 1 || !w.rootCA[0].Equal(root.cert) {
					t.Errorf("%s pilot-agent's ROOTCA is %s, want istiod's root", name, subjects(w.rootCA))
				}
			}
			if err := mtls(legacy, migrated, legacyID, workloadID); err != nil {
				t.Errorf("istiod-held server, meshca client: %v", err)
			}
			if err := mtls(migrated, legacy, workloadID, legacyID); err != nil {
				t.Errorf("meshca server, istiod-held client: %v", err)
			}
			t.Logf("mTLS both ways: istiod-held %s / meshca %s, ROOTCA %s", subjects(legacy.chain), subjects(migrated.chain), subjects(migrated.rootCA))
			legacyPA.stopClean(t)
			meshcaPA.stopClean(t)
		})
	}
}
