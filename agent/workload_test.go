package agent

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.step.sm/crypto/keyutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/testkit"
)

type workloadFixture struct {
	tree *testkit.Tree
	pub  *publisher
	srv  *workloadServer
	path string
}

func newWorkloadFixture(t *testing.T) *workloadFixture {
	t.Helper()
	f := &workloadFixture{tree: testkit.New(t, testkit.Options{}), pub: newPublisher()}
	var err error
	if f.srv, err = newWorkloadServer(workloadConfig{Source: f.pub, Logger: discardLogger()}); err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(f.srv.ServerOptions()...)
	f.srv.Register(g)
	f.path = serveGRPC(t, g, f.srv.Shutdown)
	return f
}

func (f *workloadFixture) rotate(t *testing.T) *SVID {
	t.Helper()
	svid := newSVID(t, f.tree, webID, time.Hour)
	f.pub.Publish(mustSnapshot(t, svid, f.tree.Bundle))
	return svid
}

func (f *workloadFixture) addr() string { return "unix://" + f.path }

// rawClient is a Workload API client without go-spiffe, for requests it
// would not make.
func (f *workloadFixture) rawClient(t *testing.T) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(f.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func TestWorkloadAPIX509SourceSeesRotation(t *testing.T) {
	f := newWorkloadFixture(t)
	first := f.rotate(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(f.addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != webID || !svid.Certificates[0].Equal(first.Chain[0]) || len(svid.Certificates) != 2 {
		t.Errorf("SVID %s with %d certificates, want %s leaf then intermediate", svid.ID, len(svid.Certificates), webID)
	}
	bundle, err := source.GetX509BundleForTrustDomain(webID.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	if !bundle.HasX509Authority(f.tree.Root.Certificate) || len(bundle.X509Authorities()) != 1 {
		t.Error("bundle is not the tree's root")
	}

	second := f.rotate(t)
	select {
	case <-source.Updated():
	case <-ctx.Done():
		t.Fatal("X509Source saw no update after rotation")
	}
	if svid, err = source.GetX509SVID(); err != nil || !svid.Certificates[0].Equal(second.Chain[0]) {
		t.Errorf("after rotation: %v, serial %s, want %s", err, serialOf(svid.Certificates[0]), serialOf(second.Chain[0]))
	}
	if !keyutil.Equal(second.Key.Public(), svid.PrivateKey.Public()) {
		t.Error("after rotation: private key does not match the certificate")
	}
}

func TestWorkloadAPIFetchX509Bundles(t *testing.T) {
	f := newWorkloadFixture(t)
	f.rotate(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	set, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(f.addr()))
	if err != nil {
		t.Fatal(err)
	}
	b, ok := set.Get(webID.TrustDomain())
	if set.Len() != 1 || !ok || !b.HasX509Authority(f.tree.Root.Certificate) {
		t.Errorf("bundles: %d trust domains, want cluster.local with the tree's root", set.Len())
	}
}

func TestWorkloadAPIStreamsWaitForFirstCertificateAndStayOpen(t *testing.T) {
	f := newWorkloadFixture(t)
	f.pub.Publish(mustSnapshot(t, nil, f.tree.Bundle))
	c := f.rawClient(t)
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), waitTimeout)
	defer cancel()
	svids, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := c.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		svid := f.rotate(t)
		resp, err := svids.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetSvids()) != 1 || resp.GetSvids()[0].GetSpiffeId() != webID.String() {
			t.Fatalf("response %d SVIDs, want exactly %s", len(resp.GetSvids()), webID)
		}
		if got := resp.GetSvids()[0].GetX509Svid(); string(got[:len(svid.Chain[0].Raw)]) != string(svid.Chain[0].Raw) {
			t.Error("x509_svid does not start with the new leaf")
		}
	}
	// The bundle never changed: one response, sent once the trust domain
	// was known.
	resp, err := bundles.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetBundles()["spiffe://cluster.local"]; string(got) != string(f.tree.Root.Certificate.Raw) {
		t.Errorf("bundles %v, want cluster.local's root DER", keys(resp.GetBundles()))
	}
}

func TestWorkloadAPISecurityHeader(t *testing.T) {
	f := newWorkloadFixture(t)
	f.rotate(t)
	c := f.rawClient(t)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		code codes.Code
	}{
		{"missing", context.Background(), codes.InvalidArgument},
		{"false", metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "false"), codes.InvalidArgument},
		{"twice", metadata.AppendToOutgoingContext(withHeader(context.Background()), "workload.spiffe.io", "true"), codes.InvalidArgument},
		{"present", withHeader(context.Background()), codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(tc.ctx, waitTimeout)
			defer cancel()
			stream, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tc.code {
				t.Errorf("FetchX509SVID: %v, want %v", err, tc.code)
			}
			_, err = c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
			want := tc.code
			if want == codes.OK {
				want = codes.Unimplemented
			}
			if status.Code(err) != want {
				t.Errorf("FetchJWTSVID: %v, want %v", err, want)
			}
		})
	}
}

// TestWorkloadAPIJWTWithoutMinter serves the Workload API without an
// issuer to mint JWT-SVIDs and without JWT authorities: FetchJWTSVID is
// Unimplemented, FetchJWTBundles sends the own trust domain with no keys,
// and ValidateJWTSVID refuses every token.
func TestWorkloadAPIJWTWithoutMinter(t *testing.T) {
	f := newWorkloadFixture(t)
	f.rotate(t)
	c := f.rawClient(t)
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), waitTimeout)
	defer cancel()
	if _, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}}); status.Code(err) != codes.Unimplemented {
		t.Errorf("FetchJWTSVID: %v, want Unimplemented", err)
	}
	if _, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID: %v, want InvalidArgument", err)
	}
	stream, err := c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.GetBundles()["spiffe://cluster.local"]); len(resp.GetBundles()) != 1 || got != `{"keys":[]}` {
		t.Errorf("FetchJWTBundles: %d trust domains, own %q; want the own one with no keys", len(resp.GetBundles()), got)
	}
}

func TestWorkloadAPIShutdownEndsStreamsCleanly(t *testing.T) {
	f := newWorkloadFixture(t)
	f.rotate(t)
	c := f.rawClient(t)
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), waitTimeout)
	defer cancel()
	stream, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	f.srv.Shutdown()
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after Shutdown: %v, want the stream to end with OK (io.EOF)", err)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestWorkloadAPIFederatedBundles(t *testing.T) {
	f := newWorkloadFixture(t)
	svid := newSVID(t, f.tree, webID, time.Hour)
	root := f.tree.Root.Certificate
	fed1, fed2 := federatedRoot(t, "fed1"), federatedRoot(t, "fed2")
	f.pub.Publish(mustFederatedSnapshot(t, svid, f.tree.Bundle, federatedOther(t, fed1)))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	// The wire format: keys are trust domain IDs, values DER roots.
	c := f.rawClient(t)
	svids, err := c.FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svids.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if fb := resp.GetFederatedBundles(); len(fb) != 1 || string(fb["spiffe://other.example"]) != string(fed1.Raw) {
		t.Errorf("federated_bundles has %v, want spiffe://other.example with its root", keys(fb))
	}
	bundles, err := c.FetchX509Bundles(withHeader(ctx), &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bresp, err := bundles.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if b := bresp.GetBundles(); len(b) != 2 || string(b["spiffe://cluster.local"]) != string(root.Raw) || string(b["spiffe://other.example"]) != string(fed1.Raw) {
		t.Errorf("bundles has %v, want cluster.local and other.example", keys(b))
	}

	// go-spiffe reads them.
	addr := workloadapi.WithAddr(f.addr())
	x509ctx, err := workloadapi.FetchX509Context(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := x509ctx.Bundles.Get(otherTD); !ok || !bundleIs(b, fed1) || x509ctx.Bundles.Len() != 2 {
		t.Errorf("X509Context: %d bundles, want cluster.local and other.example", x509ctx.Bundles.Len())
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	waitSource(t, src, otherTD, fed1)

	// A change of the federated bundle alone reaches open streams.
	f.pub.Publish(mustFederatedSnapshot(t, svid, f.tree.Bundle, federatedOther(t, fed1, fed2)))
	waitSource(t, src, otherTD, fed1, fed2)
	if resp, err = svids.Recv(); err != nil || len(resp.GetFederatedBundles()["spiffe://other.example"]) != len(fed1.Raw)+len(fed2.Raw) {
		t.Errorf("FetchX509SVID after the federated change: %v, want both federated roots", err)
	}
	if bresp, err = bundles.Recv(); err != nil || len(bresp.GetBundles()["spiffe://other.example"]) != len(fed1.Raw)+len(fed2.Raw) {
		t.Errorf("FetchX509Bundles after the federated change: %v, want both federated roots", err)
	}
}
