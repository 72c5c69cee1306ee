package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/agent"
	"github.com/meshca/meshca/trust"
)

func newCertCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "Work with workload certificates"}
	cmd.AddCommand(newCertFetchCommand())
	return cmd
}

// certFetch is what `meshca cert fetch` was asked for.
type certFetch struct {
	cfg       agent.ClientConfig
	bundle    string
	tokenFile string
	outDir    string
	keyType   string
	ttl       time.Duration
	timeout   time.Duration
	crlFiles  []string
}

func newCertFetchCommand() *cobra.Command {
	var fc certFetch
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Generate a key locally and fetch a certificate for it from an issuer",
		Long: `Generates a private key locally, sends a CSR to the issuer over the Istio CA API
(authenticated by the token in --token-file) and writes OUT/cert.pem (leaf then
intermediates), OUT/key.pem (PKCS#8, mode 0600) and OUT/bundle.pem (roots). The key
never leaves this machine.

Before the token is sent, the issuer must prove to be the issuer of
--issuer-cluster (default --cluster-id): its intermediate, signed by a root of
--ca-bundle, names that cluster. With neither flag, any cluster's issuer is
accepted. Each --crl (PEM or DER, signed by a root of --ca-bundle) makes fetch
refuse an issuer whose intermediate it revokes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return fc.run(cmd) },
	}
	f := cmd.Flags()
	f.StringVar(&fc.cfg.Address, "issuer", "", "issuer address host:port (required)")
	f.StringVar(&fc.bundle, "ca-bundle", "", "PEM file of trusted root certificates (required)")
	f.StringVar(&fc.tokenFile, "token-file", "", "file holding the service-account token (required)")
	f.StringVar(&fc.outDir, "out", "", "directory to write cert.pem, key.pem and bundle.pem to (required)")
	f.StringVar(&fc.keyType, "key-type", agent.KeyECP256, "key type: ec-p256 or rsa-2048")
	f.DurationVar(&fc.ttl, "ttl", 0, "requested certificate lifetime (0: the issuer's default)")
	f.StringVar(&fc.cfg.ClusterID, "cluster-id", "", "cluster id sent to the issuer (empty: the issuer's local cluster)")
	f.StringVar(&fc.cfg.ServerName, "server-name", "", "TLS server name (default: the host of --issuer)")
	f.StringVar(&fc.cfg.IssuerCluster, "issuer-cluster", "", "cluster whose issuer is required, checked at the TLS handshake (default: --cluster-id; empty: any cluster's issuer)")
	f.StringArrayVar(&fc.crlFiles, "crl", nil, "root CRL file (PEM or DER); an issuer whose intermediate it revokes is refused (repeatable)")
	f.DurationVar(&fc.timeout, "timeout", 30*time.Second, "give up after this long")
	for _, name := range []string{"issuer", "ca-bundle", "token-file", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// run fetches and writes the certificate.
func (fc certFetch) run(cmd *cobra.Command) error {
	cfg := fc.cfg
	bundlePEM, err := os.ReadFile(fc.bundle)
	if err != nil {
		return fmt.Errorf("--ca-bundle: %w", err)
	}
	if cfg.Roots, err = trust.ParseBundle(bundlePEM); err != nil {
		return fmt.Errorf("--ca-bundle %s: %w", fc.bundle, err)
	}
	token, err := agent.ReadToken(fc.tokenFile)
	if err != nil {
		return err
	}
	key, err := agent.GenerateKey(fc.keyType)
	if err != nil {
		return err
	}
	client, err := agent.NewClient(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	if len(fc.crlFiles) > 0 {
		crls, err := readCRLFiles(fc.crlFiles)
		if err != nil {
			return err
		}
		if err := client.SetCRLs(crls); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), fc.timeout)
	defer cancel()
	svid, err := client.Fetch(ctx, key, token, fc.ttl)
	if err != nil {
		if st, ok := status.FromError(unwrapStatus(err)); ok {
			return fmt.Errorf("cert fetch: issuer %s refused: %s: %s", cfg.Address, st.Code(), st.Message())
		}
		return fmt.Errorf("cert fetch: %w", err)
	}
	if err := agent.WriteFiles(fc.outDir, svid); err != nil {
		return err
	}
	leaf := svid.Chain[0]
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/{cert,key,bundle}.pem: %s, serial %s, valid until %s\n",
		fc.outDir, leaf.URIs[0], trust.SerialHex(leaf.SerialNumber), leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// unwrapStatus finds the innermost error carrying a gRPC status.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			return e
		}
	}
	return err
}

// readCRLFiles reads CRLs from PEM ("X509 CRL" blocks) or DER files.
func readCRLFiles(paths []string) ([][]byte, error) {
	var out [][]byte
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("--crl: %w", err)
		}
		if !bytes.Contains(data, []byte("-----BEGIN")) {
			out = append(out, data)
			continue
		}
		n := len(out)
		for rest := data; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if block.Type == "X509 CRL" {
				out = append(out, block.Bytes)
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("--crl %s: no X509 CRL block", p)
		}
	}
	for i, der := range out {
		if _, err := x509.ParseRevocationList(der); err != nil {
			return nil, fmt.Errorf("--crl: CRL %d: %w", i+1, err)
		}
	}
	return out, nil
}
