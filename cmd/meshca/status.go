package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

func newStatusCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what a running root or issuer is and how it is doing",
		Long: `meshca status asks a running "meshca root serve" or "meshca issuer serve" (or the issuer
of "meshca dev") over its admin socket, or over the admin API's mutual TLS listener with
--server, exactly as "meshca admin" does, and prints: its role (root or issuer), trust
domain and cluster, the addresses it listens on (gRPC, admin socket, admin mTLS, metrics;
"-" when not configured or not known), the roots and intermediates with their expiry,
the sequence of the trust bundle it serves, the registered clusters (root), the number
of revocations in force, whether its store answers, and the audit log's head and last
signed checkpoint.

Output is a table by default; -o json prints every field, timestamps in RFC 3339.
The command fails only when the server cannot be asked; a store that does not answer is
shown as "unreachable".`,
		Example: `  meshca status --socket ./.meshca-root/admin.sock
  meshca status --socket ./.meshca-issuer/admin.sock -o json
  meshca status --server root.example:8444 --cert admin/cert.pem --key admin/key.pem --ca-bundle admin/bundle.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.Status(ctx, &meshcav1.StatusRequest{})
				if err != nil {
					return err
				}
				return f.printAll(cmd.OutOrStdout(), resp, func(w io.Writer) { printStatus(w, resp) })
			})
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// printStatus writes s as a table: the server's fields, then its roots,
// intermediates and (root) clusters.
func printStatus(w io.Writer, s *meshcav1.StatusResponse) {
	l := s.GetListen()
	fmt.Fprintf(w, "role\t%s\n", s.GetRole())
	fmt.Fprintf(w, "trust domain\t%s\n", orDash(s.GetTrustDomain()))
	if s.GetRole() == "root" {
		fmt.Fprintf(w, "trust domains\t%s\n", orDash(strings.Join(s.GetTrustDomains(), ", ")))
	} else {
		fmt.Fprintf(w, "cluster\t%s\n", orDash(s.GetCluster()))
		fmt.Fprintf(w, "upstream\t%s\n", orDash(s.GetUpstream()))
	}
	fmt.Fprintf(w, "grpc listen\t%s\n", orDash(l.GetGrpcAddr()))
	fmt.Fprintf(w, "admin socket\t%s\n", orDash(l.GetAdminSocket()))
	fmt.Fprintf(w, "admin mtls listen\t%s\n", orDash(l.GetAdminTlsAddr()))
	fmt.Fprintf(w, "metrics listen\t%s\n", orDash(l.GetMetricsAddr()))
	fmt.Fprintf(w, "bundle sequence\t%d\n", s.GetBundleSequence())
	fmt.Fprintf(w, "revocations in force\t%d\n", s.GetRevocations())
	store := "reachable"
	if !s.GetStore().GetReachable() {
		store = "UNREACHABLE (see the server's log)"
	}
	fmt.Fprintf(w, "store\t%s\n", store)
	a := s.GetAudit()
	fmt.Fprintf(w, "audit head\tseq %d hash %s\n", a.GetHeadSeq(), orDash(a.GetHeadHash()))
	if cp := a.GetLastCheckpoint(); cp != nil {
		fmt.Fprintf(w, "last checkpoint\tseq %d hash %s at %s\n", cp.GetSeq(), cp.GetHash(), timeOf(cp.GetTime()))
	} else {
		fmt.Fprintf(w, "last checkpoint\t-\n")
	}
	fmt.Fprintf(w, "time\t%s\n", timeOf(s.GetTime()))
	printCACerts(w, "ROOT", s.GetRoots())
	printCACerts(w, "INTERMEDIATE", s.GetIntermediates())
	if s.GetRole() == "root" {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "CLUSTER\tTRUST DOMAIN\tVALID INTERMEDIATES\tREVOKED\tDNS NAMES")
		for _, c := range s.GetClusters() {
			fmt.Fprintf(w, "%s\t%s\t%d\t%t\t%s\n", c.GetName(), c.GetTrustDomain(), c.GetIntermediates(), c.GetRevoked(),
				orDash(strings.Join(c.GetDnsNames(), ",")))
		}
	}
}

func printCACerts(w io.Writer, kind string, cs []*meshcav1.CACertificate) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%s SHA256\tSTATE\tCLUSTER\tNOT AFTER\tSUBJECT\n", kind)
	for _, c := range cs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.GetSha256(), orDash(c.GetState()), orDash(c.GetCluster()),
			timeOf(c.GetNotAfter()), c.GetSubject())
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
