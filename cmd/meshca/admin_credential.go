package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"github.com/spf13/cobra"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

func newAdminCredentialCommand(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "credential", Short: "Issue admin certificates for the admin API over mutual TLS"}
	var id, out string
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue --spiffe-id ID --out DIR [--ttl DUR]",
		Short: "Issue an admin certificate, signed directly by a root (the root's, or a standalone issuer's local root), into DIR",
		Long: `Generates a key here (it never leaves this host), sends a CSR over the admin socket of
the root, or of an issuer with a local root, and writes DIR/cert.pem, DIR/key.pem (0600)
and DIR/bundle.pem (the roots, for --ca-bundle). The certificate is an X509-SVID for ID,
for client authentication only, signed directly by a root, so that no cluster issuer can
mint one; list ID in the server's admin.spiffeIDs. It is recorded and audited; revoke it
with "meshca admin revoke --serial" on the same server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || out == "" {
				return errors.New("--spiffe-id and --out are required")
			}
			if ttl < 0 || ttl%time.Second != 0 {
				return fmt.Errorf("--ttl %v: want whole seconds", ttl)
			}
			keyPath := filepath.Join(out, "key.pem")
			if _, err := os.Lstat(keyPath); err == nil {
				return fmt.Errorf("%s exists: remove it or choose another --out", keyPath)
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return fmt.Errorf("create CSR: %w", err)
			}
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.IssueAdminCredential(ctx, &meshcav1.IssueAdminCredentialRequest{
					SpiffeId: id, Csr: csr, TtlSeconds: int64(ttl / time.Second),
				})
				if err != nil {
					return err
				}
				cert, err := writeAdminCredential(out, key, resp)
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) {
					fmt.Fprintf(w, "spiffe id\t%s\nserial\t%s\nnot after\t%s\ncertificate\t%s\nkey\t%s\nbundle\t%s\n", id,
						resp.GetSerial(), cert.NotAfter.UTC().Format(time.RFC3339), filepath.Join(out, "cert.pem"), keyPath,
						filepath.Join(out, "bundle.pem"))
				})
			})
		},
	}
	issue.Flags().StringVar(&id, "spiffe-id", "", "SPIFFE ID of the admin (required)")
	issue.Flags().StringVar(&out, "out", "", "directory for cert.pem, key.pem and bundle.pem (required; created 0700)")
	issue.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default 24h, at most 168h)")
	cmd.AddCommand(issue)
	return cmd
}

// writeAdminCredential checks the answer (the certificate holds key's
// public key and chains to a root of the answer) and writes the three
// files: the key first (0600), then the certificate and the roots.
func writeAdminCredential(dir string, key *ecdsa.PrivateKey, resp *meshcav1.IssueAdminCredentialResponse) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(resp.GetCertificate())
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("admin certificate: not for the key generated here")
	}
	var roots []*x509.Certificate
	for _, der := range resp.GetRoots() {
		r, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		roots = append(roots, r)
	}
	bundle, err := trust.NewBundle(roots...)
	if err != nil {
		return nil, fmt.Errorf("roots: %w", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: bundle.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	for _, file := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600},
		{"cert.pem", trust.EncodeCertificates(cert), 0o644},
		{"bundle.pem", bundle.PEM(), 0o644},
	} {
		if err := renameio.WriteFile(filepath.Join(dir, file.name), file.data, file.mode); err != nil {
			return nil, fmt.Errorf("write %s: %w", file.name, err)
		}
	}
	return cert, nil
}
