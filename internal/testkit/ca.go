package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	keysMu sync.Mutex
	keys   = map[string]crypto.Signer{}
)

// Key returns a process-wide cached ECDSA P-256 key for name.
func Key(tb testing.TB, name string) crypto.Signer {
	tb.Helper()
	return cachedKey(tb, name, func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
}

// KeyOf returns a process-wide cached key of the given kind: p256, p384,
// p224, rsa1024, rsa2048 or ed25519, for tests of key-type handling.
func KeyOf(tb testing.TB, kind string) crypto.Signer {
	tb.Helper()
	gen := map[string]func() (crypto.Signer, error){
		"p256":    func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
		"p384":    func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) },
		"p224":    func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P224(), rand.Reader) },
		"rsa1024": func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 1024) },
		"rsa2048": func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
		"ed25519": func() (crypto.Signer, error) {
			_, k, err := ed25519.GenerateKey(rand.Reader)
			return k, err
		},
	}[kind]
	if gen == nil {
		tb.Fatalf("unknown key kind %q", kind)
	}
	// A space cannot start a name given to Key, so the two never share.
	return cachedKey(tb, " "+kind, gen)
}

// cachedKey returns the key cached under name, generating it with gen the
// first time.
func cachedKey(tb testing.TB, name string, gen func() (crypto.Signer, error)) crypto.Signer {
	tb.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[name]; ok {
		return k
	}
	k, err := gen()
	if err != nil {
		tb.Fatalf("generate key %s: %v", name, err)
	}
	keys[name] = k
	return k
}

// Root returns a self-signed root CA on the cached key named key, issued at
// now and valid for ttl.
func Root(tb testing.TB, key string, now time.Time, ttl time.Duration) *ca.Authority {
	tb.Helper()
	r, err := ca.NewRoot(ca.RootConfig{Signer: Key(tb, key), Now: now, TTL: ttl})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// Tree is a root and one intermediate under it.
type Tree struct {
	Root         *ca.Authority
	Intermediate *ca.Authority
	Bundle       *trust.Bundle
	TrustDomain  spiffeid.TrustDomain
}

// Options tune New; zero values give a 10-year root and a 30-day
// intermediate issued at now for trust domain "cluster.local".
type Options struct {
	TrustDomain string
	// RootKey names the cached root key; empty means "root". Trees with
	// different RootKeys have unrelated roots.
	RootKey         string
	Now             time.Time
	RootTTL         time.Duration
	IntermediateTTL time.Duration
	// Cluster names the intermediate's cluster; empty means "test".
	Cluster string
	// ServingNames are the DNS names and IPs the intermediate may vouch
	// for; nil means TestServingNames.
	ServingNames []string
	// WorkloadDNSNames are DNS names the intermediate admits exactly in
	// workload leaves (ca.IntermediateRequest); nil means none.
	WorkloadDNSNames []string
}

// TestServingNames are the names a test intermediate may vouch for by
// default: the loopback names tests serve under, the Istio name, and the
// reserved "test" domain (RFC 2606) with every name under it.
var TestServingNames = []string{"localhost", "127.0.0.1", "::1", "istiod.istio-system.svc", "test"}

// New builds a root and an intermediate for the given trust domain.
func New(tb testing.TB, opts Options) *Tree {
	tb.Helper()
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		tb.Fatalf("trust domain: %v", err)
	}
	if opts.RootKey == "" {
		opts.RootKey = "root"
	}
	if opts.Cluster == "" {
		opts.Cluster = "test"
	}
	if opts.ServingNames == nil {
		opts.ServingNames = TestServingNames
	}
	root, err := ca.NewRoot(ca.RootConfig{Signer: Key(tb, opts.RootKey), TTL: opts.RootTTL, Now: opts.Now})
	if err != nil {
		tb.Fatalf("root: %v", err)
	}
	ikey := Key(tb, "intermediate-"+opts.TrustDomain)
	icert, err := root.SignIntermediate(ca.IntermediateRequest{
		PublicKey: ikey.Public(), TrustDomain: td, Cluster: opts.Cluster, ServingNames: opts.ServingNames,
		WorkloadDNSNames: opts.WorkloadDNSNames, TTL: opts.IntermediateTTL, Now: opts.Now,
	})
	if err != nil {
		tb.Fatalf("intermediate: %v", err)
	}
	inter, err := ca.NewAuthority(icert, ikey)
	if err != nil {
		tb.Fatalf("intermediate authority: %v", err)
	}
	bundle, err := trust.NewBundle(root.Certificate)
	if err != nil {
		tb.Fatalf("bundle: %v", err)
	}
	return &Tree{Root: root, Intermediate: inter, Bundle: bundle, TrustDomain: td}
}

// Certificate signs tmpl for pub with signer, the key of parent (tmpl
// itself for a self-signed certificate), and returns it parsed.
func Certificate(tb testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Authority returns cert, its key and its chain as an Authority
// (ca.NewAuthority), failing tb if they do not make one.
func Authority(tb testing.TB, cert *x509.Certificate, key crypto.Signer, chain ...*x509.Certificate) *ca.Authority {
	tb.Helper()
	a, err := ca.NewAuthority(cert, key, chain...)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// Intermediate signs req under parent for the cached key named key (it
// sets req.PublicKey) and returns the intermediate as an Authority.
func Intermediate(tb testing.TB, parent *ca.Authority, key string, req ca.IntermediateRequest) *ca.Authority {
	tb.Helper()
	k := Key(tb, key)
	req.PublicKey = k.Public()
	c, err := parent.SignIntermediate(req)
	if err != nil {
		tb.Fatal(err)
	}
	return Authority(tb, c, k)
}

// UpstreamCA signs a CA certificate for the cached key named key under
// parent, as an upstream PKI signs its intermediates and meshca's CA:
// issued at now for 48 hours, with path length pathLen (-1:
// unconstrained). A nil parent makes a self-signed root. chain is what
// lies above parent.
func UpstreamCA(tb testing.TB, parent *ca.Authority, key string, pathLen int, now time.Time, chain ...*x509.Certificate) *ca.Authority {
	tb.Helper()
	k := Key(tb, key)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: key},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLen: pathLen, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	parentCert, signer := tmpl, k
	if parent != nil {
		parentCert, signer = parent.Certificate, parent.Signer
	}
	return Authority(tb, Certificate(tb, tmpl, parentCert, k.Public(), signer), k, chain...)
}
