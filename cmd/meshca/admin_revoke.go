package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

func newAdminRevokeCommand(f *adminFlags) *cobra.Command {
	var serial, id, cluster, reason string
	cmd := &cobra.Command{
		Use:   "revoke (--serial HEX | --spiffe-id ID | --cluster NAME) [--reason R]",
		Short: "Revoke one certificate or one identity (issuer socket), or a whole cluster or a certificate the root signed (root socket)",
		Long: `Revokes at once: the issuers refuse new certificates for a revoked identity, and the
certificates revoked go onto CRLs that agents hand to Envoy (SDS ROOTCA) and applications
(Workload API) within seconds. --serial and --spiffe-id go to an issuer's admin socket;
--cluster goes to the root's, and puts every intermediate of the cluster on the root's CRL
and stops its issuer from renewing or enrolling. --serial on the root's socket revokes one
certificate the root signed: an intermediate (onto the root's CRL) or an issuer credential
(the root refuses it from then on; its issuer enrols again with a new join token).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &meshcav1.RevokeRequest{Reason: reason}
			n := 0
			if serial != "" {
				req.Target, n = &meshcav1.RevokeRequest_Serial{Serial: serial}, n+1
			}
			if id != "" {
				req.Target, n = &meshcav1.RevokeRequest_SpiffeId{SpiffeId: id}, n+1
			}
			if cluster != "" {
				req.Target, n = &meshcav1.RevokeRequest_Cluster{Cluster: cluster}, n+1
			}
			if n != 1 {
				return errors.New("give exactly one of --serial, --spiffe-id and --cluster")
			}
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.Revoke(ctx, req)
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) { printRevocations(w, resp.GetRevocation()) })
			})
		},
	}
	cmd.Flags().StringVar(&serial, "serial", "", "certificate serial, hexadecimal")
	cmd.Flags().StringVar(&id, "spiffe-id", "", "SPIFFE ID: every certificate of it (until each expires), and any new one until unrevoke")
	cmd.Flags().StringVar(&cluster, "cluster", "", "cluster name: its intermediates and its issuer")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

func newAdminUnrevokeCommand(f *adminFlags) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "unrevoke --spiffe-id ID",
		Short: "Lift the revocation of an identity (issuer socket): it can get new certificates again",
		Long: `Lifts the revocation of an identity: its issuer issues it new certificates again. Every
certificate of the identity issued before the lift stays revoked, on CRLs, until it expires
(a revoked key is never trusted again); "revocations" lists them as serial revocations.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return errors.New("--spiffe-id is required")
			}
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.Unrevoke(ctx, &meshcav1.UnrevokeRequest{SpiffeId: id})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) { fmt.Fprintf(w, "unrevoked\t%s\n", id) })
			})
		},
	}
	cmd.Flags().StringVar(&id, "spiffe-id", "", "SPIFFE ID (required)")
	return cmd
}

func newAdminRevocationsCommand(f *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revocations",
		Short: "List the revocations in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.ListRevocations(ctx, &meshcav1.ListRevocationsRequest{})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) { printRevocations(w, resp.GetRevocations()...) })
			})
		},
	}
}

func printRevocations(w io.Writer, rs ...*meshcav1.Revocation) {
	fmt.Fprintln(w, "KIND\tVALUE\tCLUSTER\tREVOKED\tBY\tREASON")
	for _, r := range rs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.GetKind(), r.GetValue(), r.GetCluster(), timeOf(r.GetRevokedAt()), r.GetRevokedBy(), r.GetReason())
	}
}

func newAdminCertsCommand(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Inspect issued certificates (issuer socket)"}
	var id, cluster string
	var active bool
	var limit int32
	list := &cobra.Command{
		Use:   "list [--spiffe-id ID] [--cluster NAME] [--active]",
		Short: "List issued certificates, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.ListCertificates(ctx, &meshcav1.ListCertificatesRequest{SpiffeId: id, Cluster: cluster, Active: active, Limit: limit})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) { printCerts(w, resp.GetCertificates()...) })
			})
		},
	}
	list.Flags().StringVar(&id, "spiffe-id", "", "only this SPIFFE ID")
	list.Flags().StringVar(&cluster, "cluster", "", "only this cluster")
	list.Flags().BoolVar(&active, "active", false, "only certificates valid now")
	list.Flags().Int32Var(&limit, "limit", 0, "at most this many (default 1000)")
	show := &cobra.Command{
		Use:   "show SERIAL",
		Short: "Show one certificate record and whether it is revoked (issuer socket)",
		Long: `Shows the record of the certificate with serial SERIAL and, below it, the revocation in
force that covers it (by serial or by SPIFFE ID), or "not revoked". With -o json the
revocation is the "revoked" field, absent when the certificate is not revoked.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.GetCertificate(ctx, &meshcav1.GetCertificateRequest{Serial: args[0]})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) {
					printCerts(w, resp.GetCertificate())
					fmt.Fprintln(w)
					if r := resp.GetRevoked(); r != nil {
						printRevocations(w, r)
					} else {
						fmt.Fprintln(w, "not revoked")
					}
				})
			})
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}

func printCerts(w io.Writer, cs ...*meshcav1.Certificate) {
	fmt.Fprintln(w, "SERIAL\tSPIFFE ID\tCLUSTER\tNOT BEFORE\tNOT AFTER")
	for _, c := range cs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.GetSerial(), c.GetSpiffeId(), c.GetCluster(), timeOf(c.GetNotBefore()), timeOf(c.GetNotAfter()))
	}
}

func newAdminAuditCommand(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify the audit log of the root or an issuer"}
	var since time.Duration
	var limit int32
	list := &cobra.Command{
		Use:   "list [--since DUR]",
		Short: "List audit events, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.ListAuditEvents(ctx, &meshcav1.ListAuditEventsRequest{Since: timestamppb.New(time.Now().Add(-since)), Limit: limit})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) {
					fmt.Fprintln(w, "SEQ\tTIME\tACTOR\tACTION\tCLUSTER\tSPIFFE ID\tSERIAL\tDETAIL")
					for _, e := range resp.GetEvents() {
						fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetSeq(), timeOf(e.GetTime()), e.GetActor(), e.GetAction(),
							e.GetCluster(), e.GetSpiffeId(), e.GetSerial(), e.GetDetail())
					}
				})
			})
		},
	}
	list.Flags().DurationVar(&since, "since", time.Hour, "how far back")
	list.Flags().Int32Var(&limit, "limit", 0, "at most this many (default 1000)")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Walk the whole audit hash chain; non-zero exit if it is broken",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.VerifyAudit(ctx, &meshcav1.VerifyAuditRequest{})
				if err != nil {
					return err
				}
				// Every field, zero or not: an empty chain says events 0.
				if err := f.printAll(cmd.OutOrStdout(), resp, func(w io.Writer) {
					if resp.GetOk() {
						fmt.Fprintf(w, "audit chain verified: %d events, head seq %d hash %s\n",
							resp.GetEvents(), resp.GetHeadSeq(), resp.GetHeadHash())
					} else {
						fmt.Fprintf(w, "audit chain BROKEN: %s\n%d events verified, up to seq %d hash %s\n",
							resp.GetProblem(), resp.GetEvents(), resp.GetHeadSeq(), resp.GetHeadHash())
					}
				}); err != nil {
					return err
				}
				if !resp.GetOk() {
					return errors.New("audit chain broken")
				}
				return nil
			})
		},
	}
	cmd.AddCommand(list, verify)
	return cmd
}

func timeOf(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}
