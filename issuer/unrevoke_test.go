package issuer_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// replica is one issuer process over a SQLite store: deny-list, issuer, CRL
// signer and admin socket, on the real clock. Its deny-list is reloaded
// only by admin changes (as on the replica that takes the call), so its
// CRLs change only when an admin call changes the deny-list.
type replica struct {
	iss    *issuer.Issuer
	signer *issuer.CRLSigner
	client meshcav1.AdminServiceClient
	stop   func()
}

func startReplica(t *testing.T, tree *testkit.Tree, dbPath string) *replica {
	t.Helper()
	log, _ := captureLogs(t)
	db, err := sqlite.Open(t.Context(), sqlite.Config{Path: dbPath})
	if err != nil {
		t.Fatal(err)
	}
	dl := newDenyList(t, db, log)
	if err := dl.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Authority: tree.Intermediate, Bundle: tree.Bundle,
		Attestor: &fakeAttestor{identities: map[string]attest.Identity{
			goodToken: {Namespace: "default", ServiceAccount: "web"},
			apiToken:  {Namespace: "default", ServiceAccount: "api"},
		}},
		Recorder: db, DenyList: dl, MinTTL: time.Minute, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuer.NewCRLSigner(issuer.CRLSignerConfig{Issuer: iss, DenyList: dl, Store: db, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := issuer.NewAdminServer(issuer.AdminConfig{
		TrustDomain: tree.TrustDomain, Cluster: "dev", Store: db, DenyList: dl, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := adminapi.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- signer.Run(ctx) }()
	go func() { done <- srv.ServeUnix(ctx, lis) }()
	r := &replica{iss: iss, signer: signer, client: meshcav1.NewAdminServiceClient(conn)}
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("replica: %v", err)
			}
		}
		if err := db.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

func (r *replica) issue(t *testing.T, token string) *x509.Certificate {
	t.Helper()
	chain, err := r.iss.Issue(t.Context(), issuer.Request{Token: token, CSR: csrPEM(t, testKey(t, "p256"), nil)})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return chain[0]
}

// revoked returns the serials on the replica's current CRL, verified
// against tree.
func (r *replica) revoked(t *testing.T, tree *testkit.Tree) []string {
	t.Helper()
	crls, _ := r.signer.Current()
	if len(crls) != 1 {
		t.Fatalf("%d CRLs, want 1", len(crls))
	}
	rl, _, err := trust.VerifyCRL(crls[0], tree.Bundle, time.Now())
	if err != nil {
		t.Fatalf("CRL: %v", err)
	}
	return revokedSerials(rl)
}

// waitCRL waits for the replica's first CRL, or for its next one when
// changed is not nil.
func (r *replica) waitCRL(t *testing.T, changed <-chan struct{}) {
	t.Helper()
	if changed == nil {
		crls, ch := r.signer.Current()
		if len(crls) > 0 {
			return
		}
		changed = ch
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no new CRL within 10s")
	}
}

// adminCall runs call and waits for the CRLs it changes.
func (r *replica) adminCall(t *testing.T, what string, call func(context.Context, meshcav1.AdminServiceClient) error) {
	t.Helper()
	_, changed := r.signer.Current()
	if err := call(t.Context(), r.client); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	r.waitCRL(t, changed)
}

// TestUnrevokeKeepsCertificatesOnTheCRL: a SPIFFE ID is revoked because its
// key leaked, then the revocation is lifted so that the workload can get a
// new certificate. The certificate issued before stays on the CRL (a holder
// of the leaked key must not be trusted again), also after a restart; the
// one issued after the lift is not revoked.
func TestUnrevokeKeepsCertificatesOnTheCRL(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	dbPath := filepath.Join(t.TempDir(), "meshca.db")
	r := startReplica(t, tree, dbPath)
	r.waitCRL(t, nil)
	leaked := r.issue(t, goodToken)
	api := r.issue(t, apiToken)

	r.adminCall(t, "revoke", func(ctx context.Context, c meshcav1.AdminServiceClient) error {
		_, err := c.Revoke(ctx, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: webID},
			Reason: "key compromise"})
		return err
	})
	if got, want := r.revoked(t, tree), serialsOf(leaked); !slices.Equal(got, want) {
		t.Fatalf("CRL after revoking %s lists %v, want %v", webID, got, want)
	}
	r.adminCall(t, "unrevoke", func(ctx context.Context, c meshcav1.AdminServiceClient) error {
		_, err := c.Unrevoke(ctx, &meshcav1.UnrevokeRequest{SpiffeId: webID})
		return err
	})
	if got, want := r.revoked(t, tree), serialsOf(leaked); !slices.Equal(got, want) {
		t.Fatalf("CRL after unrevoking %s lists %v, want the certificate revoked before, %v", webID, got, want)
	}

	// The identity gets a new certificate, which is not revoked: the CRL
	// signed on the next change lists the old one and the new revocation.
	fresh := r.issue(t, goodToken)
	r.adminCall(t, "revoke serial", func(ctx context.Context, c meshcav1.AdminServiceClient) error {
		_, err := c.Revoke(ctx, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_Serial{
			Serial: trust.SerialHex(api.SerialNumber)}})
		return err
	})
	want := serialsOf(leaked, api)
	if got := r.revoked(t, tree); !slices.Equal(got, want) {
		t.Fatalf("CRL lists %v, want %v (not the certificate issued after the lift, %s)", got, want,
			trust.SerialHex(fresh.SerialNumber))
	}

	// A restarted issuer builds the same CRL from the store.
	r.stop()
	r = startReplica(t, tree, dbPath)
	r.waitCRL(t, nil)
	if got := r.revoked(t, tree); !slices.Equal(got, want) {
		t.Fatalf("CRL after a restart lists %v, want %v", got, want)
	}

	// Revoking the identity again revokes the new certificate too; lifting
	// that keeps both.
	r.adminCall(t, "revoke again", func(ctx context.Context, c meshcav1.AdminServiceClient) error {
		_, err := c.Revoke(ctx, &meshcav1.RevokeRequest{Target: &meshcav1.RevokeRequest_SpiffeId{SpiffeId: webID}})
		return err
	})
	r.adminCall(t, "unrevoke again", func(ctx context.Context, c meshcav1.AdminServiceClient) error {
		_, err := c.Unrevoke(ctx, &meshcav1.UnrevokeRequest{SpiffeId: webID})
		return err
	})
	if got, want := r.revoked(t, tree), serialsOf(leaked, api, fresh); !slices.Equal(got, want) {
		t.Fatalf("CRL after revoking and lifting again lists %v, want %v", got, want)
	}
}
