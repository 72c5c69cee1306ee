package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

// defaultAdminSocket is where `meshca root serve` listens for admin calls
// with its default data dir (an issuer's is DATA_DIR/admin.sock of its
// own data dir).
const defaultAdminSocket = "./.meshca-root/admin.sock"

// adminFlags are shared by every `meshca admin` subcommand.
type adminFlags struct {
	socket  string
	output  string
	timeout time.Duration
	// server, when set, is the admin API over mutual TLS (instead of the
	// socket), reached with the admin certificate cert/key and trusting the
	// roots of caBundle.
	server, serverName, cert, key, caBundle string
	// serverIdentity is which meshca server the server must be (see
	// verifyServer).
	serverIdentity string
}

func newAdminCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Administer a running root or issuer over its admin socket or admin mTLS listener",
		Long: `meshca admin talks to a running "meshca root serve" over its Unix admin socket
or a running "meshca issuer serve" over theirs (DATA_DIR/admin.sock; access is controlled
by the socket's file permissions and the caller's Unix user). With --server it talks to
the admin API over mutual TLS instead (the server's admin.listen), presenting an admin
certificate from "meshca admin credential issue" (--cert, --key) and trusting the roots
in --ca-bundle. Clusters, roots and cluster revocation are the root's; certificates,
their revocation and the issuer's audit log are an issuer's.
Output is a table by default, JSON with -o json.`,
	}
	f.register(cmd.PersistentFlags())
	cmd.AddCommand(newAdminClusterCommand(f), newAdminRootCommand(f), newAdminRevokeCommand(f), newAdminUnrevokeCommand(f),
		newAdminRevocationsCommand(f), newAdminCertsCommand(f), newAdminAuditCommand(f), newAdminCredentialCommand(f))
	return cmd
}

// register adds the flags of f to fs: persistent flags of `meshca admin`,
// and the flags of `meshca status`.
func (f *adminFlags) register(fs *pflag.FlagSet) {
	def := os.Getenv("MESHCA_ADMIN_SOCKET")
	if def == "" {
		def = defaultAdminSocket
	}
	fs.StringVar(&f.socket, "socket", def, "admin socket of the root or of an issuer (DATA_DIR/admin.sock; env MESHCA_ADMIN_SOCKET)")
	fs.StringVarP(&f.output, "output", "o", "table", "output format: table or json (timestamps in RFC 3339)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline of the call")
	fs.StringVar(&f.server, "server", "", "HOST:PORT of the admin API over mutual TLS (admin.listen of the root or an issuer), instead of --socket")
	fs.StringVar(&f.serverName, "server-name", "", "name checked in the server's certificate (default: the host of --server)")
	fs.StringVar(&f.serverIdentity, "server-identity", "", `which meshca server --server must be: "root", or a cluster name for that cluster's issuer (default: the root or any cluster's issuer)`)
	fs.StringVar(&f.cert, "cert", "", "admin certificate (PEM) for --server")
	fs.StringVar(&f.key, "key", "", "private key (PEM) of --cert")
	fs.StringVar(&f.caBundle, "ca-bundle", "", "roots (PEM) that sign the server's certificate, for --server")
}

// call dials the admin socket, or the admin API over mutual TLS with
// --server, and runs fn with a deadline.
func (f *adminFlags) call(ctx context.Context, fn func(context.Context, meshcav1.AdminServiceClient) error) error {
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("-o %q: want table or json", f.output)
	}
	conn, err := f.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return fn(ctx, meshcav1.NewAdminServiceClient(conn))
}

func newAdminClusterCommand(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Register clusters and make join tokens for their issuers"}
	var td string
	var ttl time.Duration
	var share bool
	var replicas int32
	var dnsNames []string
	var replaceDNS bool
	add := &cobra.Command{
		Use:   "add NAME --trust-domain TD",
		Short: "Register a cluster (or find it) and print a join token for its issuer",
		Long: `Registers cluster NAME with trust domain TD (an existing cluster must have the same
trust domain) and prints a new one-time join token. Put the token in the issuer's
upstream.joinTokenFile; it is used once, at the issuer's first start, and expires after --ttl.

With --replicas N the token is a join secret for N issuer replicas of the cluster (one
Secret mounted in every replica): each replica enrols under its own name (upstream.replica,
default the host name, that is the pod name) and gets its own credential and intermediates.
It stays valid until it expires, so replicas can be replaced and scaled up to N without
another cluster add; a replica that has not renewed for an intermediate lifetime no longer
counts towards N. Treat it like the issuers' keys; replace it before it expires.

A trust domain another cluster already holds is refused unless --share-trust-domain is
given: the issuers of clusters sharing a trust domain can mint each other's identities.

--dns-name (repeatable) lists the workload DNS names the cluster's intermediates admit,
each exactly (not its subdomains): istiod's serving names, which the issuer's dnsGrants
then give to istiod alone. They are stored with a new cluster. An existing cluster keeps
its own: other names are refused unless --replace-dns-names is given (with no --dns-name:
none), and then its next intermediate admits them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if td == "" {
				return errors.New("--trust-domain is required")
			}
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.AddCluster(ctx, &meshcav1.AddClusterRequest{
					Name: args[0], TrustDomain: td, TokenTtlSeconds: int64(ttl / time.Second), ShareTrustDomain: share,
					Replicas: replicas, DnsNames: dnsNames, ReplaceDnsNames: replaceDNS,
				})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) {
					fmt.Fprintf(w, "cluster\t%s\ntrust domain\t%s\njoin token\t%s\nexpires\t%s\nroot sha256\t%s\n", args[0], td,
						resp.GetJoinToken(), timeOf(resp.GetExpiresAt()), strings.Join(resp.GetRootSha256(), ", "))
				})
			})
		},
	}
	add.Flags().StringVar(&td, "trust-domain", "", "trust domain of the cluster's workloads (required)")
	add.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the join token may be used")
	add.Flags().BoolVar(&share, "share-trust-domain", false, "allow a trust domain another cluster already holds")
	add.Flags().Int32Var(&replicas, "replicas", 1, "issuer replicas that share the join token, each enrolling under its own name "+
		"(upstream.replica); above 1 the token stays valid until it expires (--ttl up to 90 days)")
	add.Flags().StringArrayVar(&dnsNames, "dns-name", nil, "workload DNS name the cluster's intermediates admit exactly, e.g. istiod.istio-system.svc (repeatable)")
	add.Flags().BoolVar(&replaceDNS, "replace-dns-names", false, "make --dns-name the existing cluster's names (none without --dns-name)")
	cmd.AddCommand(add)
	return cmd
}

func newAdminRootCommand(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "root", Short: "Inspect and rotate root CAs"}
	var delay time.Duration
	var force bool
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Create a new root: it joins the bundle now and signs after the propagation delay",
		Long: `Create a new root: it joins the bundle now and signs after the propagation delay.
Refused while a rotation is in progress, that is while a root other than the active
one is still in the bundle (prepared, or retiring until the last intermediate under it
expires): --force rotates anyway and puts one more root in the bundle.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.RotateRoot(ctx, &meshcav1.RotateRootRequest{PropagationDelaySeconds: int64(delay / time.Second), Force: force})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) { printRoots(w, resp.GetRoot()) })
			})
		},
	}
	rotate.Flags().DurationVar(&delay, "propagation-delay", 0, "time before the new root signs (default: the root's configured delay)")
	rotate.Flags().BoolVar(&force, "force", false, "rotate even while a rotation is in progress (a prepared or retiring root in the bundle)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the roots and their state (prepared, active, retiring, retired)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd.Context(), func(ctx context.Context, c meshcav1.AdminServiceClient) error {
				resp, err := c.ListRoots(ctx, &meshcav1.ListRootsRequest{})
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), resp, func(w io.Writer) { printRoots(w, resp.GetRoots()...) })
			})
		},
	}
	cmd.AddCommand(rotate, list)
	return cmd
}

func printRoots(w io.Writer, roots ...*meshcav1.RootInfo) {
	fmt.Fprintln(w, "SHA256\tSTATE\tNOT AFTER\tACTIVATES\tKEY")
	for _, r := range roots {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.GetSha256(), r.GetState(), timeOf(r.GetNotAfter()), timeOf(r.GetActivateAt()), r.GetKey())
	}
}

// print writes msg as JSON (protojson field names, zero fields left out)
// or as a table.
func (f *adminFlags) print(out io.Writer, msg proto.Message, table func(io.Writer)) error {
	return f.printWith(out, protojson.MarshalOptions{Multiline: true, UseProtoNames: true}, msg, table)
}

// printAll is print with every field in the JSON, zero or not.
func (f *adminFlags) printAll(out io.Writer, msg proto.Message, table func(io.Writer)) error {
	return f.printWith(out, protojson.MarshalOptions{Multiline: true, UseProtoNames: true, EmitUnpopulated: true}, msg, table)
}

func (f *adminFlags) printWith(out io.Writer, opts protojson.MarshalOptions, msg proto.Message, table func(io.Writer)) error {
	if f.output == "json" {
		b, err := opts.Marshal(msg)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// verifyServer checks, during the handshake and before any admin call, that
// --server is the meshca server --server-identity names: the root, a
// cluster's issuer, or by default either.
func (f *adminFlags) verifyServer(cs tls.ConnectionState) error {
	switch f.serverIdentity {
	case "root":
		return trust.ServerCheck{Root: true}.VerifyConnection(cs)
	case "":
		if (trust.ServerCheck{Root: true}).VerifyConnection(cs) == nil {
			return nil
		}
		return trust.ServerCheck{}.VerifyConnection(cs)
	default:
		return trust.ServerCheck{Cluster: f.serverIdentity}.VerifyConnection(cs)
	}
}

// dial connects to the admin socket, or to --server over mutual TLS.
func (f *adminFlags) dial() (*grpc.ClientConn, error) {
	if f.server == "" {
		if f.cert != "" || f.key != "" || f.caBundle != "" {
			return nil, errors.New("--cert, --key and --ca-bundle go with --server")
		}
		if _, err := os.Stat(f.socket); err != nil {
			return nil, fmt.Errorf("admin socket %s: %w (is meshca root serve or meshca issuer serve running? set --socket)", f.socket, err)
		}
		conn, err := grpc.NewClient("unix:"+f.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("admin socket %s: %w", f.socket, err)
		}
		return conn, nil
	}
	if f.cert == "" || f.key == "" || f.caBundle == "" {
		return nil, errors.New("--server needs --cert, --key and --ca-bundle")
	}
	host, _, err := net.SplitHostPort(f.server)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", f.server, err)
	}
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	roots, err := readPEMBundle(f.caBundle)
	if err != nil {
		return nil, fmt.Errorf("--ca-bundle: %w", err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: roots.Pool(), ServerName: cmp.Or(f.serverName, host),
		Certificates: []tls.Certificate{cert}, VerifyConnection: f.verifyServer,
	}
	conn, err := grpc.NewClient(f.server, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("admin server %s: %w", f.server, err)
	}
	return conn, nil
}
