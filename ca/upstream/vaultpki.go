package upstream

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/smallstep/certificates/cas/apiv1"

	"github.com/meshca/meshca/ca/vault"
)

// vaultPKI is a Vault PKI secrets engine as an apiv1 service. Unlike
// smallstep's vaultcas (pki/sign/ROLE, end-entity certificates only) it
// signs with the issuer's sign-intermediate endpoint, the one Vault
// offers for CA certificates.
type vaultPKI struct {
	client *vault.Client
	cfg    VaultPKI
	// timeout bounds each call: the apiv1 methods take no context.
	timeout time.Duration
}

var _ Service = (*vaultPKI)(nil)

// defaultVaultPKIMount and defaultVaultIssuer are VaultPKI's defaults.
const (
	defaultVaultPKIMount = "pki"
	defaultVaultIssuer   = "default"
)

// newVaultPKI logs in to Vault as v says.
func newVaultPKI(ctx context.Context, v VaultPKI) (Service, error) {
	c, err := vault.NewClient(ctx, vault.Config{
		Address: v.Address, Namespace: v.Namespace, Auth: v.Auth, CACertFile: v.CACertFile, TLSServerName: v.TLSServerName,
	})
	if err != nil {
		return nil, err
	}
	return &vaultPKI{client: c, cfg: v, timeout: vault.DefaultTimeout}, nil
}

// issuerPath is the path of the issuer's endpoint op.
func (p *vaultPKI) issuerPath(op string) string {
	mount := strings.Trim(p.cfg.Mount, "/")
	if mount == "" {
		mount = defaultVaultPKIMount
	}
	ref := p.cfg.Issuer
	if ref == "" {
		ref = defaultVaultIssuer
	}
	return mount + "/issuer/" + url.PathEscape(ref) + "/" + op
}

// CreateCertificate implements Service: the CSR signed as a CA by the
// issuer (pki/issuer/REF/sign-intermediate), with the CSR's subject, the
// template's path length and the requested lifetime.
func (p *vaultPKI) CreateCertificate(req *apiv1.CreateCertificateRequest) (*apiv1.CreateCertificateResponse, error) {
	if req == nil || req.CSR == nil || req.Template == nil {
		return nil, errors.New("vault pki: a CSR and a template are required")
	}
	body := map[string]any{
		"csr":            string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR.Raw})),
		"use_csr_values": true,
		"ttl":            strconv.FormatInt(int64(req.Lifetime/time.Second), 10) + "s",
		"format":         "pem",
	}
	if req.Template.MaxPathLen > 0 || req.Template.MaxPathLenZero {
		body["max_path_length"] = req.Template.MaxPathLen
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	secret, err := p.client.Write(ctx, p.issuerPath("sign-intermediate"), body)
	if err != nil {
		return nil, vaultStatus(err)
	}
	cert, err := secretCert(secret, "certificate")
	if err != nil {
		return nil, err
	}
	all, err := secretChain(secret)
	if err != nil {
		return nil, err
	}
	// ca_chain may start with the certificate just signed.
	var chain []*x509.Certificate
	for _, c := range all {
		if !c.Equal(cert) {
			chain = append(chain, c)
		}
	}
	return &apiv1.CreateCertificateResponse{Certificate: cert, CertificateChain: chain}, nil
}

// GetCertificateAuthority implements Service: the self-signed end of the
// issuer's CA chain (pki/issuer/REF/json), checked against
// VaultPKI.Fingerprint when set.
func (p *vaultPKI) GetCertificateAuthority(*apiv1.GetCertificateAuthorityRequest) (*apiv1.GetCertificateAuthorityResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	secret, err := p.client.Read(ctx, p.issuerPath("json"))
	if err != nil {
		return nil, vaultStatus(err)
	}
	chain, err := secretChain(secret)
	if err != nil {
		return nil, err
	}
	if c, err := secretCert(secret, "certificate"); err == nil {
		chain = append(chain, c)
	}
	for _, c := range chain {
		if string(c.RawIssuer) != string(c.RawSubject) || c.CheckSignatureFrom(c) != nil {
			continue
		}
		if fp := p.cfg.Fingerprint; fp != "" {
			sum := sha256.Sum256(c.Raw)
			if !strings.EqualFold(hex.EncodeToString(sum[:]), fp) {
				return nil, fmt.Errorf("vault pki: the issuer's root %q does not have the configured fingerprint", c.Subject)
			}
		}
		return &apiv1.GetCertificateAuthorityResponse{RootCertificate: c}, nil
	}
	return nil, errors.New("vault pki: the issuer's chain has no self-signed root (import it into the mount with the issuer)")
}

// Close stops the Vault token's renewal.
func (p *vaultPKI) Close() error { return p.client.Close() }

// statusError carries the HTTP status of a Vault answer, so that classify
// tells a refusal (4xx) from an outage.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string   { return e.err.Error() }
func (e *statusError) Unwrap() error   { return e.err }
func (e *statusError) StatusCode() int { return e.code }

// vaultStatus exposes the status of a Vault response error to classify.
// A 403 that survived a fresh login (vault.ErrPermissionDenied) is a
// refusal: the policy must change.
func vaultStatus(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode != http.StatusTooManyRequests {
		return &statusError{code: re.StatusCode, err: err}
	}
	return err
}

func secretCert(s *api.Secret, key string) (*x509.Certificate, error) {
	if s == nil || s.Data == nil {
		return nil, errors.New("vault pki: empty answer")
	}
	text, _ := s.Data[key].(string)
	certs, err := parsePEMCerts(text)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("vault pki: %s: no certificate (%v)", key, err)
	}
	return certs[0], nil
}

// secretChain reads ca_chain: a list of PEM certificates (sign-intermediate
// and issuer/REF/json), nearest first.
func secretChain(s *api.Secret) ([]*x509.Certificate, error) {
	if s == nil || s.Data == nil {
		return nil, errors.New("vault pki: empty answer")
	}
	var out []*x509.Certificate
	list, _ := s.Data["ca_chain"].([]any)
	for i, v := range list {
		text, _ := v.(string)
		certs, err := parsePEMCerts(text)
		if err != nil {
			return nil, fmt.Errorf("vault pki: ca_chain %d: %w", i, err)
		}
		out = append(out, certs...)
	}
	return out, nil
}

func parsePEMCerts(text string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}
