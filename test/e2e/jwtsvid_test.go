package e2e

import (
	"context"
	"crypto"
	"crypto/tls"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

// TestDevMintsJWTSVID mints a JWT-SVID from `meshca dev` over its gRPC API
// with a dev token and validates it, with go-spiffe, against the JWT keys
// of the bundle the same process serves (each key checked against the
// roots in bundle.pem first).
func TestDevMintsJWTSVID(t *testing.T) {
	srv := startDev(t, devOptions{})
	pemRoots, err := os.ReadFile(srv.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := trust.ParseBundle(pemRoots)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots.Pool(), ServerName: "istiod.istio-system.svc",
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tok, _ := mintToken(t, srv.Dir, "token")
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok)), 10*time.Second)
	defer cancel()

	mint := meshcav1.NewJWTSVIDServiceClient(conn)
	resp, err := mint.MintJWTSVID(ctx, &meshcav1.MintJWTSVIDRequest{Audience: []string{"payments"}})
	if err != nil {
		t.Fatalf("MintJWTSVID: %v", err)
	}
	const web = "spiffe://cluster.local/ns/default/sa/web"
	if resp.GetSpiffeId() != web {
		t.Errorf("spiffe_id %q, want %q", resp.GetSpiffeId(), web)
	}
	got, err := meshcav1.NewBundleServiceClient(conn).GetBundle(ctx, &meshcav1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := trust.TrustBundleFromProto(got.GetBundle())
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	own, ok := tb.Domain(td)
	if !ok || len(own.JWTAuthorities) == 0 {
		t.Fatalf("the served bundle has no JWT authorities for %s", td)
	}
	keys := map[string]crypto.PublicKey{}
	for _, a := range own.JWTAuthorities {
		if err := trust.VerifyJWTAuthority(a, td, roots, time.Now()); err != nil {
			t.Fatalf("served JWT authority does not verify against bundle.pem: %v", err)
		}
		keys[a.KeyID] = a.PublicKey
	}
	svid, err := jwtsvid.ParseAndValidate(resp.GetToken(), jwtbundle.FromJWTAuthorities(td, keys), []string{"payments"})
	if err != nil {
		t.Fatalf("the JWT-SVID does not validate against the served bundle: %v", err)
	}
	if svid.ID.String() != web || svid.Expiry.Unix() != resp.GetExpiresAtUnix() {
		t.Errorf("JWT-SVID for %s expiring %v; response says %s and %d", svid.ID, svid.Expiry, resp.GetSpiffeId(), resp.GetExpiresAtUnix())
	}
	if life := time.Until(svid.Expiry); life > 5*time.Minute || life < 4*time.Minute {
		t.Errorf("JWT-SVID lives %v, want the default 5m", life)
	}
	if _, err := jwtsvid.ParseAndValidate(resp.GetToken(), jwtbundle.FromJWTAuthorities(td, keys), []string{"other"}); err == nil {
		t.Error("the JWT-SVID validated for an audience it does not name")
	}

	_, err = mint.MintJWTSVID(metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok[:len(tok)-4]+"AAAA")),
		&meshcav1.MintJWTSVIDRequest{Audience: []string{"payments"}})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("a forged token got %v, want Unauthenticated", err)
	}
	if strings.Contains(srv.Stderr(), resp.GetToken()) {
		t.Error("the JWT-SVID was logged")
	}
	if !strings.Contains(srv.Stderr(), "JWT-SVID issued") {
		t.Error("no log line for the JWT-SVID")
	}
}

// TestAgentServesJWTSVIDs runs `meshca dev` and the agent as processes and
// uses go-spiffe's Workload API client as an application would: a
// JWTSource fetches a JWT-SVID that the issuer minted for the agent's
// identity, validates it against the JWT bundle the agent serves, and the
// agent's ValidateJWTSVID accepts it for its audience only.
func TestAgentServesJWTSVIDs(t *testing.T) {
	srv := startDev(t, devOptions{})
	_, tokenFile := mintToken(t, srv.Dir, "token")
	a := startAgent(t, srv, tokenFile, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), agentWaitTimeout)
	defer cancel()
	addr := workloadapi.WithClientOptions(workloadapi.WithAddr("unix://" + a.WorkloadSocket))

	source, err := workloadapi.NewJWTSource(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	svid, err := source.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "payments"})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if svid.ID != webID || len(svid.Audience) != 1 || svid.Audience[0] != "payments" {
		t.Fatalf("JWT-SVID for %s, audience %v; want %s, [payments]", svid.ID, svid.Audience, webID)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), source, []string{"payments"}); err != nil {
		t.Fatalf("the token does not validate against the agent's JWT bundle: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), source, []string{"other"}); err == nil {
		t.Fatal("a token for payments validated for another audience")
	}

	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+a.WorkloadSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	got, err := client.ValidateJWTSVID(ctx, svid.Marshal(), "payments")
	if err != nil || got.ID != webID {
		t.Fatalf("agent ValidateJWTSVID: %v, %v", got, err)
	}
	if _, err := client.ValidateJWTSVID(ctx, svid.Marshal(), "other"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("agent ValidateJWTSVID for another audience: %v, want InvalidArgument", err)
	}
}
