package stack

import (
	"cmp"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/upstream"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// UpstreamCAFile, in DATA_DIR, holds the standalone issuer's CA
// certificate from the upstream PKI, the upstream's intermediates and its
// root (PEM, in that order): a restart uses it while it passes
// upstream.Check, without asking the upstream.
const UpstreamCAFile = "upstream-ca.pem"

// spkiPinPrefix marks a recorded standalone root that is a key (the hex
// SHA-256 of its SubjectPublicKeyInfo) rather than one certificate: under
// an upstream PKI each replica holds certificates of its own for the key,
// renewed at times of its own.
const spkiPinPrefix = "spki:"

// caIssuer is what the standalone issuer needs of an upstream PKI;
// *upstream.Authority is one.
type caIssuer interface {
	Issue(ctx context.Context, req upstream.Request) (*upstream.Issued, error)
}

// pkiRenewer is the issuer.CARenewer of a standalone issuer under an
// upstream PKI: it has the upstream certify the root key, and keep keeps
// the answer the LocalRoot accepted in file for the next start.
type pkiRenewer struct {
	up     caIssuer
	signer crypto.Signer
	file   string
	log    *slog.Logger
}

var _ issuer.CARenewer = pkiRenewer{}

// RenewCA asks the upstream for a CA certificate for the root key. A
// refusal or an unusable answer wraps rotation.ErrRefused
// (upstream.RenewalError).
func (p pkiRenewer) RenewCA(ctx context.Context, now time.Time) (issuer.UpstreamCA, error) {
	in, err := p.up.Issue(ctx, upstream.Request{Signer: p.signer, Now: now})
	if err != nil {
		return issuer.UpstreamCA{}, upstream.RenewalError(err)
	}
	u, err := upstreamCA(in, p.signer)
	if err != nil {
		return issuer.UpstreamCA{}, upstream.RenewalError(err)
	}
	return u, nil
}

// keep writes u, the CA certificate in use, its chain and the upstream's
// root, to the file the next start reads (cachedCA). Failing is logged:
// the certificate is good, the next start asks the upstream again.
func (p pkiRenewer) keep(u issuer.UpstreamCA) {
	certs := append(append([]*x509.Certificate{u.CA.Certificate}, u.CA.Chain...), u.Anchor)
	if err := renameio.WriteFile(p.file, trust.EncodeCertificates(certs...), 0o644); err != nil {
		p.log.Warn("cannot keep the CA certificate from the upstream PKI; the next start asks the upstream again", "file", p.file, "error", err.Error())
	}
}

func upstreamCA(in *upstream.Issued, signer crypto.Signer) (issuer.UpstreamCA, error) {
	a, err := ca.NewAuthority(in.Certificate, signer, in.Chain...)
	if err != nil {
		return issuer.UpstreamCA{}, fmt.Errorf("%w: %w", upstream.ErrBadCertificate, err)
	}
	return issuer.UpstreamCA{CA: a, Anchor: in.Root}, nil
}

// cachedCA reads what RenewCA kept in file, if it still serves for signer
// at now (upstream.Check); otherwise nil, and why is logged.
func (p pkiRenewer) cachedCA(now time.Time) *issuer.UpstreamCA {
	data, err := os.ReadFile(p.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	certs, err := trust.ParseCertificates(data)
	if err == nil && len(certs) < 2 {
		err = errors.New("want the CA certificate and the upstream's root at least")
	}
	if err == nil {
		in := &upstream.Issued{Certificate: certs[0], Chain: certs[1 : len(certs)-1], Root: certs[len(certs)-1]}
		if err = upstream.Check(in, p.signer.Public(), now); err == nil {
			var u issuer.UpstreamCA
			if u, err = upstreamCA(in, p.signer); err == nil {
				return &u
			}
		}
	}
	p.log.Info("not using the kept CA certificate; asking the upstream PKI", "file", p.file, "reason", err.Error())
	return nil
}

// connectUpstreamPKI connects to c.UpstreamPKI (upstream.New) and returns
// the standalone issuer's CA under it (upstreamPKIRoot) and a function
// that releases the connection (a Vault token's renewal).
func connectUpstreamPKI(ctx context.Context, c Config, db store.StandaloneRootStore, log *slog.Logger) (issuer.UpstreamCA, pkiRenewer, func(), error) {
	up, err := upstream.New(ctx, *c.UpstreamPKI)
	if err != nil {
		return issuer.UpstreamCA{}, pkiRenewer{}, nil, err
	}
	closer := func() { _ = up.Close() }
	u, r, err := upstreamPKIRoot(ctx, c, db, up, log)
	if err != nil {
		closer()
		return issuer.UpstreamCA{}, pkiRenewer{}, nil, err
	}
	return u, r, closer, nil
}

// upstreamPKIRoot returns the standalone issuer's CA under the upstream
// PKI up: the root key, pinned in db by its public key for every replica
// (standaloneKey), certified by the upstream (or the certificate kept
// from before), and the renewer that renews it.
func upstreamPKIRoot(ctx context.Context, c Config, db store.StandaloneRootStore, up caIssuer, log *slog.Logger) (issuer.UpstreamCA, pkiRenewer, error) {
	signer, err := standaloneKey(ctx, c, db, log)
	if err != nil {
		return issuer.UpstreamCA{}, pkiRenewer{}, err
	}
	r := pkiRenewer{up: up, signer: signer, file: filepath.Join(c.DataDir, UpstreamCAFile), log: log}
	now := time.Now()
	if u := r.cachedCA(now); u != nil {
		return *u, r, nil
	}
	u, err := r.RenewCA(ctx, now)
	if err != nil {
		return issuer.UpstreamCA{}, pkiRenewer{}, fmt.Errorf("CA certificate from the upstream PKI: %w", err)
	}
	r.keep(u)
	log.Info("obtained meshca's CA certificate from the upstream PKI", "sha256", fingerprint(u.CA.Certificate),
		"not_after", u.CA.Certificate.NotAfter, "anchor_sha256", fingerprint(u.Anchor))
	return u, r, nil
}

// standaloneKey returns the root key of a standalone issuer under an
// upstream PKI, checked against the key its store records for the trust
// domain and cluster (by the SHA-256 of its SubjectPublicKeyInfo), so that
// replicas sharing a store hold one key whatever certificates the
// upstream gives each. The first replica on a store records its key
// (creating it if the directory holds none); a replica with another key,
// or none once one is recorded, is refused and creates nothing.
func standaloneKey(ctx context.Context, c Config, db store.StandaloneRootStore, log *slog.Logger) (crypto.Signer, error) {
	td, dir := c.TrustDomain, cmp.Or(c.RootDir, c.DataDir)
	path := filepath.Join(dir, ca.RootKeyFile)
	recorded, err := db.StandaloneRoot(ctx, td.String(), c.Cluster)
	var signer crypto.Signer
	switch {
	case errors.Is(err, store.ErrNotFound):
		if signer, err = ca.LoadOrCreateKeyFile(path); err != nil {
			return nil, err
		}
		pin, err := spkiPin(signer)
		if err != nil {
			return nil, err
		}
		if recorded, err = db.PinStandaloneRoot(ctx, td.String(), c.Cluster, pin); err != nil {
			return nil, fmt.Errorf("record the root key: %w", err)
		}
		if recorded == pin {
			log.Info("serving under the root key recorded in the store", "trust_domain", td.String(), "cluster", c.Cluster, "root_key", pin)
		}
	case err != nil:
		return nil, fmt.Errorf("read the recorded root: %w", err)
	default:
		signer, err = ca.LoadKeyFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("the store records root %s for trust domain %s cluster %q, but %s holds no root key: refusing to create another; %s",
				recorded, td, c.Cluster, dir, sharedRootAdvice)
		}
		if err != nil {
			return nil, err
		}
	}
	pin, err := spkiPin(signer)
	if err != nil {
		return nil, err
	}
	if pin != recorded {
		return nil, fmt.Errorf("the root key in %s (%s) is not the root the store records for trust domain %s cluster %q (%s): "+
			"certificates from this replica would fail against the others' bundles; %s", dir, pin, td, c.Cluster, recorded, sharedRootAdvice)
	}
	return signer, nil
}

// spkiPin is how standaloneKey records a key.
func spkiPin(signer crypto.Signer) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return "", fmt.Errorf("root key: %w", err)
	}
	sum := sha256.Sum256(der)
	return spkiPinPrefix + hex.EncodeToString(sum[:]), nil
}

func fingerprint(c *x509.Certificate) string {
	sum := trust.Fingerprint(c)
	return hex.EncodeToString(sum[:])
}
