package root

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/grpcx"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// credentialPathPrefix starts the path of every issuer credential's SPIFFE
// ID: spiffe://<trust domain>/meshca/cluster/<cluster name>, and
// .../<cluster name>/<replica> for a named replica of the cluster's issuer.
const credentialPathPrefix = "/meshca/cluster/"

// parseCredentialPath returns the cluster and replica ("" for none) an
// issuer credential's SPIFFE ID path names; ok is false when the path is
// not an issuer credential's.
func parseCredentialPath(path string) (cluster, replica string, ok bool) {
	rest, ok := strings.CutPrefix(path, credentialPathPrefix)
	if !ok {
		return "", "", false
	}
	cluster, replica, named := strings.Cut(rest, "/")
	if !validClusterName(cluster) || named && !validClusterName(replica) {
		return "", "", false
	}
	return cluster, replica, true
}

// parseCSR parses a DER PKCS#10 request and checks its key, then its
// signature.
// The subject is ignored: the root decides every name, but takes an
// intermediate CSR's DNS and IP SANs as the serving names its issuer asks
// for (Root.servingNames).
func parseCSR(what string, der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: %s is missing", grpcx.ErrInvalidArgument, what)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", grpcx.ErrInvalidArgument, what, err)
	}
	// The key first: Enroll is unauthenticated until the join token is
	// redeemed, and checking the signature of an unbounded RSA key costs
	// a modular exponentiation of its size.
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", grpcx.ErrInvalidArgument, what, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %s: signature: %w", grpcx.ErrInvalidArgument, what, err)
	}
	return csr, nil
}

func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s is not allowed (want P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("RSA key of %d bits is not allowed (want 2048 to 8192)", n)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("key type %T is not allowed", pub)
	}
	return nil
}

// credentialID is the SPIFFE ID of the issuer credential of replica of
// cluster c ("" for its single issuer).
func credentialID(c store.Cluster, replica string) (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("cluster %s: trust domain: %w", c.Name, err)
	}
	path := credentialPathPrefix + c.Name
	if replica != "" {
		path += "/" + replica
	}
	id, err := spiffeid.FromPath(td, path)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("cluster %s: credential ID: %w", c.Name, err)
	}
	return id, nil
}

// issued is what one Enroll or Renew signed.
type issued struct {
	intermediate, credential *x509.Certificate
	// chain holds the CAs above intermediate up to the trust anchor,
	// anchor excluded (caChain); empty for a self-signed root.
	chain  []*x509.Certificate
	bundle *trust.TrustBundle
}

// intermediateChain is the chain an issuer receives: the intermediate and
// the CAs above it.
func (o issued) intermediateChain() [][]byte {
	out := [][]byte{o.intermediate.Raw}
	for _, c := range o.chain {
		out = append(out, c.Raw)
	}
	return out
}

// signCredential signs and verifies an issuer credential for replica of
// cluster c under the active root of st. Nothing is recorded: the caller records it
// with the cluster's credential record, in one transaction
// (credentialIssued is its audit event).
func (r *Root) signCredential(st *state, c store.Cluster, replica string, pub crypto.PublicKey) (*x509.Certificate, error) {
	if st.active == nil {
		return nil, errNoActiveRoot
	}
	id, err := credentialID(c, replica)
	if err != nil {
		return nil, err
	}
	now := r.cfg.Now()
	cred, err := st.active.SignLeaf(ca.LeafRequest{
		PublicKey: pub, URIs: []*url.URL{id.URL()}, TTL: r.cfg.CredentialTTL, Now: now,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: sign credential: %w", grpcx.ErrUnavailable, err)
	}
	if err := verifyCredential(cred, st.active.Certificate, id, now); err != nil {
		return nil, err
	}
	return cred, nil
}

// credentialIssued is the audit event of credential cred for cluster c,
// signed by root, on behalf of actor.
func (r *Root) credentialIssued(actor string, c store.Cluster, cred, root *x509.Certificate) store.AuditEvent {
	return store.AuditEvent{
		Time: r.cfg.Now(), Actor: actor, Action: "credential.issue", Cluster: c.Name, SPIFFEID: cred.URIs[0].String(),
		Serial: trust.SerialHex(cred.SerialNumber),
		Detail: "issuer credential, root sha256 " + fingerprintHex(root),
	}
}

// maxServingNames bounds the serving names one intermediate may carry.
const maxServingNames = 32

// servingNames returns the DNS names and IPs the intermediate for interCSR
// may vouch for: those the CSR asks for (trust.DefaultServingNames when none)
// that Config.IssuerServingNames allows, minus the root's own serving names,
// which no cluster issuer may hold.
func (r *Root) servingNames(c store.Cluster, interCSR *x509.CertificateRequest) ([]string, error) {
	asked := slices.Clone(interCSR.DNSNames)
	for _, ip := range interCSR.IPAddresses {
		asked = append(asked, ip.String())
	}
	if len(asked) == 0 {
		asked = trust.DefaultServingNames
	}
	if len(asked) > maxServingNames {
		return nil, fmt.Errorf("%w: intermediate CSR asks for %d serving names, at most %d are allowed", grpcx.ErrInvalidArgument, len(asked), maxServingNames)
	}
	if _, _, err := trust.SplitServingNames(asked); err != nil {
		return nil, fmt.Errorf("%w: intermediate CSR: %w", grpcx.ErrInvalidArgument, err)
	}
	var names, dropped []string
	for _, n := range asked {
		if r.isOwnHost(n) || !allowedName(r.cfg.IssuerServingNames, n) {
			dropped = append(dropped, n)
		} else if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(dropped) > 0 {
		r.log.Warn("intermediate will not vouch for serving names that are the root's or not allowed by issuerServingNames",
			"cluster", c.Name, "names", dropped)
	}
	return names, nil
}

// allowedName reports whether name (a DNS name or IP) is one of allowed or,
// for a DNS name, under one of them.
func allowedName(allowed []string, name string) bool {
	ip := net.ParseIP(name)
	for _, a := range allowed {
		aip := net.ParseIP(a)
		switch {
		case ip != nil && aip != nil && aip.Equal(ip):
			return true
		case ip == nil && aip == nil:
			a, name := strings.ToLower(a), strings.ToLower(name)
			if name == a || strings.HasSuffix(name, "."+a) {
				return true
			}
		}
	}
	return false
}

// isOwnHost reports whether name (a DNS name or IP) is one of the root's
// serving names or, as a DNS name constraint also permits subdomains, a
// parent domain of one.
func (r *Root) isOwnHost(name string) bool {
	ip := net.ParseIP(name)
	for _, h := range r.cfg.Hosts {
		hip := net.ParseIP(h)
		switch {
		case ip != nil && hip != nil && hip.Equal(ip):
			return true
		case ip == nil && hip == nil:
			h, name := strings.ToLower(h), strings.ToLower(name)
			if h == name || strings.HasSuffix(h, "."+name) {
				return true
			}
		}
	}
	return false
}

// issue signs, verifies and records an intermediate for cluster c (for
// the key and serving names of interCSR) under the active root of st. The
// actor goes into the audit log.
func (r *Root) issue(ctx context.Context, st *state, c store.Cluster, interCSR *x509.CertificateRequest, actor string) (issued, error) {
	if st.active == nil {
		return issued{}, errNoActiveRoot
	}
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return issued{}, fmt.Errorf("cluster %s: trust domain: %w", c.Name, err)
	}
	names, err := r.servingNames(c, interCSR)
	if err != nil {
		return issued{}, err
	}
	root := st.active
	now := r.cfg.Now()
	ttl := r.cfg.IntermediateTTL
	if left := st.crossUntil.Sub(now); left > 0 && left < ttl {
		ttl = left // see state.crossUntil
	}
	var out issued
	out.intermediate, err = root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: interCSR.PublicKey, TrustDomain: td, Cluster: c.Name, ServingNames: names,
		WorkloadDNSNames: c.DNSNames, TTL: ttl, Now: now,
	})
	if err != nil {
		return issued{}, fmt.Errorf("%w: sign intermediate: %w", grpcx.ErrUnavailable, err)
	}
	if err := verifyIntermediate(out.intermediate, root.Certificate, td, c.Name, c.DNSNames, now); err != nil {
		return issued{}, err
	}
	sum := sha256.Sum256(out.intermediate.Raw)
	serial := trust.SerialHex(out.intermediate.SerialNumber)
	err = r.cfg.Store.RecordIntermediate(ctx, store.Intermediate{
		Serial: serial, Cluster: c.Name, TrustDomain: td.Name(),
		RootFingerprint: fingerprintHex(root.Certificate),
		NotBefore:       out.intermediate.NotBefore.UTC(), NotAfter: out.intermediate.NotAfter.UTC(),
		Fingerprint: hex.EncodeToString(sum[:]), DER: out.intermediate.Raw,
	}, store.AuditEvent{
		Time: now, Actor: actor, Action: "intermediate.issue", Cluster: c.Name, Serial: serial,
		Detail: fmt.Sprintf("trust domain %s, root sha256 %s, not after %s, serving names %s%s", td.Name(),
			fingerprintHex(root.Certificate), out.intermediate.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), strings.Join(names, " "),
			workloadDNSDetail(c.DNSNames)),
	})
	if err != nil {
		return issued{}, fmt.Errorf("%w: record intermediate: %w", grpcx.ErrUnavailable, err)
	}
	out.chain = caChain(root)
	r.addDomain(ctx, td)
	out.bundle, _ = r.Current()
	return out, nil
}

// verifyCredential checks a credential just signed: it chains directly to
// root for client authentication and names exactly id.
func verifyCredential(cred, root *x509.Certificate, id spiffeid.ID, now time.Time) error {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	chains, err := cred.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	switch {
	case err != nil:
		return fmt.Errorf("%w: credential: %w", errSelfCheck, err)
	case len(chains) != 1 || len(chains[0]) != 2, cred.IsCA, len(cred.URIs) != 1 || cred.URIs[0].String() != id.String():
		return fmt.Errorf("%w: credential is not a leaf for %s directly under the root", errSelfCheck, id)
	}
	return nil
}

// workloadDNSDetail is the audit detail's part on workload DNS names.
func workloadDNSDetail(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return ", workload DNS names " + strings.Join(names, " ")
}

// verifyIntermediate checks an intermediate just signed: it chains to root,
// is a CA of path length 0 that may only issue into td, names cluster's
// issuer, and admits each of workloadDNS exactly (not its subdomains).
func verifyIntermediate(inter, root *x509.Certificate, td spiffeid.TrustDomain, cluster string, workloadDNS []string, now time.Time) error {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	_, err := inter.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	serverID, idErr := trust.IssuerServerID(td, cluster)
	switch {
	case idErr != nil:
		return fmt.Errorf("%w: intermediate: %w", errSelfCheck, idErr)
	case len(inter.URIs) != 1 || inter.URIs[0].String() != serverID.String():
		return fmt.Errorf("%w: intermediate does not name %s", errSelfCheck, serverID)
	case err != nil:
		return fmt.Errorf("%w: intermediate: %w", errSelfCheck, err)
	case !inter.IsCA, !inter.MaxPathLenZero, inter.MaxPathLen != 0, !inter.PermittedDNSDomainsCritical,
		!slices.Equal(inter.PermittedURIDomains, []string{td.Name()}):
		return fmt.Errorf("%w: intermediate is not a path-length-0 CA constrained to %s", errSelfCheck, td)
	}
	for _, n := range workloadDNS {
		if !slices.Contains(inter.PermittedDNSDomains, n) || !slices.Contains(inter.ExcludedDNSDomains, "."+n) {
			return fmt.Errorf("%w: intermediate does not admit exactly the workload DNS name %s", errSelfCheck, n)
		}
	}
	return nil
}
