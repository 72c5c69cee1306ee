package multicluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// TestAdminOverMTLS: the admin APIs of the issuer and of the root over
// mutual TLS answer the configured admin identity and refuse any other
// workload of the mesh.
func TestAdminOverMTLS(t *testing.T) {
	rootAdminAddr, adminAddr := freeAddr(t), freeAddr(t)
	root := startRoot(t, fmt.Sprintf("intermediateTTL: 1h\nadmin:\n  listen: %s\n  spiffeIDs: [\"spiffe://east.example/ns/ops/sa/admin\"]\n", rootAdminAddr))
	east := startIssuer(t, root, "east", "east.example", fmt.Sprintf(
		"admin:\n  listen: %s\n  spiffeIDs: [\"spiffe://east.example/ns/ops/sa/admin\"]\n", adminAddr))
	ops := startWorkload(t, east, root.BundlePath(), "ops", "admin", 10*time.Minute)
	web := startWorkload(t, east, root.BundlePath(), "shop", "web", 10*time.Minute)

	call := func(w *workload, adminAddr, serverName string) error {
		// The issuer presents its serving certificate (DNS names), so the
		// admin checks it as a web server under the mesh's roots, and
		// presents its X509-SVID.
		b, err := w.Source.GetX509BundleForTrustDomain(w.ID.TrustDomain())
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		for _, r := range b.X509Authorities() {
			pool.AddCert(r)
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName,
			GetClientCertificate: tlsconfig.GetClientCertificate(w.Source)}
		conn, err := grpc.NewClient(adminAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = meshcav1.NewAdminServiceClient(conn).ListRevocations(ctx, &meshcav1.ListRevocationsRequest{})
		return err
	}
	for addr, serverName := range map[string]string{adminAddr: "localhost", rootAdminAddr: rootHost} {
		if err := call(ops, addr, serverName); err != nil {
			t.Fatalf("%s: the admin identity was refused: %v", addr, err)
		}
		if err := call(web, addr, serverName); err == nil {
			t.Fatalf("%s: a non-admin workload was let into the admin API", addr)
		}
	}
}
