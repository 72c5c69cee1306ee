package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"go.step.sm/crypto/keyutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/agent/sdstest"
	"github.com/meshca/meshca/internal/testkit"
)

// sdsFixture is an SDS server over a Publisher, with a CA tree to make
// certificates and a log to inspect.
type sdsFixture struct {
	tree *testkit.Tree
	pub  *publisher
	path string
	logs *logBuffer
}

func newSDSFixture(t *testing.T) *sdsFixture {
	t.Helper()
	f := &sdsFixture{tree: testkit.New(t, testkit.Options{}), pub: newPublisher(), logs: &logBuffer{}}
	f.path = startSDS(t, f.pub, f.logs.logger())
	return f
}

// rotate publishes a new certificate for webID and returns it.
func (f *sdsFixture) rotate(t *testing.T) *SVID {
	t.Helper()
	svid := newSVID(t, f.tree, webID, time.Hour)
	if !f.pub.Publish(mustSnapshot(t, svid, f.tree.Bundle)) {
		t.Fatal("publish reported no change")
	}
	return svid
}

func TestSDSDefaultAndROOTCA(t *testing.T) {
	f := newSDSFixture(t)
	svid := f.rotate(t)
	e := envoy(t, f.path, "sidecar~10.0.0.1~web-1.default~default.svc.cluster.local")

	def := next(t, subscribe(t, e, ResourceDefault))
	if len(def.Chain) != 2 || !def.Chain[0].Equal(svid.Chain[0]) || !def.Chain[1].Equal(f.tree.Intermediate.Certificate) {
		t.Errorf("default: chain does not match the SVID (leaf, intermediate)")
	}
	if !keyutil.Equal(svid.Key.Public(), publicOf(t, def.Key)) {
		t.Error("default: private key does not match")
	}
	if def.Version != serialOf(svid.Chain[0]) {
		t.Errorf("default: version %q, want the serial %q", def.Version, serialOf(svid.Chain[0]))
	}
	root := next(t, subscribe(t, e, ResourceRootCA))
	if len(root.Roots) != 1 || !root.Roots[0].Equal(f.tree.Root.Certificate) {
		t.Errorf("ROOTCA: %d roots, want the tree's root", len(root.Roots))
	}
}

func TestSDSResourceNames(t *testing.T) {
	f := newSDSFixture(t)
	svid := f.rotate(t)
	e := envoy(t, f.path, "node")
	for _, tc := range []struct {
		name     string
		wantCert bool
	}{
		{ResourceDefault, true},
		{webID.String(), true},
		{ResourceRootCA, false},
		{resourceAll, false},
		{"spiffe://cluster.local", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := next(t, subscribe(t, e, tc.name)) // sdstest checks the name
			if tc.wantCert && (len(u.Chain) == 0 || !u.Chain[0].Equal(svid.Chain[0])) {
				t.Errorf("%s: want the workload certificate", tc.name)
			}
			if !tc.wantCert && (len(u.Roots) != 1 || !u.Roots[0].Equal(f.tree.Root.Certificate)) {
				t.Errorf("%s: want the trust bundle", tc.name)
			}
		})
	}
}

func TestSDSUnknownResourceName(t *testing.T) {
	f := newSDSFixture(t)
	f.rotate(t)
	e := envoy(t, f.path, "node")
	for _, name := range []string{"bogus", "file-cert:/etc/cert.pem", "spiffe://cluster.local/ns/default/sa/other", "spiffe://example.org"} {
		t.Run(name, func(t *testing.T) {
			s := subscribe(t, e, name)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			_, err := s.Recv(ctx)
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), name) {
				t.Errorf("err = %v, want InvalidArgument naming %q", err, name)
			}
		})
	}
}

func TestSDSWaitsForCertificate(t *testing.T) {
	f := newSDSFixture(t)
	f.pub.Publish(mustSnapshot(t, nil, f.tree.Bundle)) // bundle only, as at start-up
	e := envoy(t, f.path, "node")
	def := subscribe(t, e, ResourceDefault)
	byID := subscribe(t, e, webID.String())
	// ROOTCA is served from the CA bundle file before any certificate.
	if u := next(t, subscribe(t, e, ResourceRootCA)); len(u.Roots) != 1 {
		t.Fatalf("ROOTCA before the first certificate: %d roots", len(u.Roots))
	}
	svid := f.rotate(t)
	for _, s := range []*sdstest.Subscription{def, byID} {
		if u := next(t, s); !u.Chain[0].Equal(svid.Chain[0]) {
			t.Errorf("%s: first response is not the first certificate", s.Name)
		}
	}
}

func TestSDSExpiredCertificateIsNotServed(t *testing.T) {
	f := newSDSFixture(t)
	f.tree = testkit.New(t, testkit.Options{Now: time.Now().Add(-3 * time.Hour)})
	expired := newSVIDAt(t, f.tree, webID, time.Now().Add(-2*time.Hour), time.Hour)
	f.pub.Publish(mustSnapshot(t, expired, f.tree.Bundle))
	s := subscribe(t, envoy(t, f.path, "node"), ResourceDefault)
	fresh := f.rotate(t)
	// Had the expired certificate been sent, it would come first.
	if u := next(t, s); !u.Chain[0].Equal(fresh.Chain[0]) {
		t.Errorf("first response carries serial %s, want the fresh %s", serialOf(u.Chain[0]), serialOf(fresh.Chain[0]))
	}
}

func TestSDSRotationPushAfterACK(t *testing.T) {
	f := newSDSFixture(t)
	first := f.rotate(t)
	s := subscribe(t, envoy(t, f.path, "node"), ResourceDefault)
	if u := next(t, s); !u.Chain[0].Equal(first.Chain[0]) {
		t.Fatal("first response is not the current certificate")
	}
	// next ACKed it. An ACK gets no reply: if it did, the reply would
	// precede the push and carry the first certificate again.
	second := f.rotate(t)
	u := next(t, s)
	if !u.Chain[0].Equal(second.Chain[0]) || u.Version != serialOf(second.Chain[0]) {
		t.Errorf("after rotation: serial %s version %q, want %s", serialOf(u.Chain[0]), u.Version, serialOf(second.Chain[0]))
	}
	if !keyutil.Equal(second.Key.Public(), publicOf(t, u.Key)) {
		t.Error("after rotation: key does not match the new certificate")
	}
}

func TestSDSNACK(t *testing.T) {
	f := newSDSFixture(t)
	first := f.rotate(t)
	s := subscribe(t, envoy(t, f.path, "router~10.0.0.9~gw~default.svc.cluster.local"), ResourceDefault)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.NACK(resp, "certificate rejected by the test"); err != nil {
		t.Fatal(err)
	}
	// The NACK request carried no node: the log names the node from the
	// stream's first message.
	f.logs.waitFor(t, "NACK", "router~10.0.0.9~gw~default.svc.cluster.local", "certificate rejected by the test",
		`"rejected_version":"`+serialOf(first.Chain[0]))
	// A NACK gets no reply and the rejected version is not resent: the next
	// response is the next certificate.
	second := f.rotate(t)
	u := next(t, s)
	if !u.Chain[0].Equal(second.Chain[0]) {
		t.Errorf("after NACK and rotation: serial %s, want %s (not the NACKed %s)",
			serialOf(u.Chain[0]), serialOf(second.Chain[0]), serialOf(first.Chain[0]))
	}
}

func TestSDSStaleNonceIgnored(t *testing.T) {
	f := newSDSFixture(t)
	f.rotate(t)
	s := subscribe(t, envoy(t, f.path, "node"), ResourceDefault)
	next(t, s)
	_, staleNonce := s.Accepted()
	f.rotate(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp2, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A request answering the first response, arriving after the second was
	// sent, asks for ROOTCA instead: it must be ignored entirely.
	stale := &discoveryv3.DiscoveryRequest{VersionInfo: "x", ResourceNames: []string{ResourceRootCA}, TypeUrl: secretTypeURL, ResponseNonce: staleNonce}
	if err := s.Send(stale); err != nil {
		t.Fatal(err)
	}
	if err := s.ACK(resp2); err != nil {
		t.Fatal(err)
	}
	f.logs.waitFor(t, "stale nonce", `"nonce":"`+staleNonce+`"`)
	third := f.rotate(t)
	u := next(t, s) // fails if the response is a ROOTCA secret
	if !u.Chain[0].Equal(third.Chain[0]) {
		t.Errorf("serial %s, want %s", serialOf(u.Chain[0]), serialOf(third.Chain[0]))
	}
}

func TestSDSChangeOfResourceNames(t *testing.T) {
	f := newSDSFixture(t)
	svid := f.rotate(t)
	s := subscribe(t, envoy(t, f.path, "node"), ResourceDefault)
	next(t, s)
	for _, name := range []string{ResourceRootCA, webID.String(), "spiffe://cluster.local", ResourceDefault} {
		if err := s.Rename(name); err != nil {
			t.Fatal(err)
		}
		u := next(t, s) // checks the resource carries the new name
		if isCert := len(u.Chain) > 0; isCert != (name == ResourceDefault || name == webID.String()) {
			t.Errorf("%s: got certificate=%v", name, isCert)
		}
		if len(u.Chain) > 0 && !u.Chain[0].Equal(svid.Chain[0]) {
			t.Errorf("%s: wrong certificate", name)
		}
	}
}

func TestSDSPushOnlyToStreamsThatChanged(t *testing.T) {
	f := newSDSFixture(t)
	f.rotate(t)
	e := envoy(t, f.path, "node")
	var certs, roots []*sdstest.Subscription
	for range 20 {
		certs = append(certs, subscribe(t, e, ResourceDefault))
		roots = append(roots, subscribe(t, e, ResourceRootCA))
	}
	for _, s := range append(slices.Clone(certs), roots...) {
		next(t, s)
	}
	second := f.rotate(t) // the certificate changes, the bundle does not
	for _, s := range certs {
		if u := next(t, s); !u.Chain[0].Equal(second.Chain[0]) {
			t.Fatalf("default stream got serial %s, want %s", serialOf(u.Chain[0]), serialOf(second.Chain[0]))
		}
	}
	// Now only the bundle changes.
	bundle, extra := otherRoot(t, f.tree)
	f.pub.Publish(mustSnapshot(t, second, bundle))
	for _, s := range roots {
		// Had the certificate rotation reached ROOTCA streams, this would
		// be the old bundle again.
		if u := next(t, s); len(u.Roots) != 2 || !u.Roots[1].Equal(extra) {
			t.Fatalf("ROOTCA stream got %d roots, want the new bundle of 2", len(u.Roots))
		}
	}
	third := f.rotate(t) // back to one root, new certificate
	for _, s := range certs {
		// Had the bundle change reached default streams, this would be the
		// second certificate again.
		if u := next(t, s); !u.Chain[0].Equal(third.Chain[0]) {
			t.Fatalf("default stream got serial %s, want %s", serialOf(u.Chain[0]), serialOf(third.Chain[0]))
		}
	}
}

// rawStream opens a StreamSecrets stream on an agent that has its first
// certificate, for requests that sdstest would never send. The stream ends
// with the test.
func rawStream(t *testing.T) secretv3.SecretDiscoveryService_StreamSecretsClient {
	t.Helper()
	f := newSDSFixture(t)
	f.rotate(t)
	e := envoy(t, f.path, "node")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	stream, err := e.Client().StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func TestSDSSeveralNamesOnOneStream(t *testing.T) {
	stream := rawStream(t)
	if err := stream.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{ResourceRootCA, ResourceDefault, ResourceRootCA}, TypeUrl: secretTypeURL}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := secretNames(t, resp); !slices.Equal(got, []string{ResourceRootCA, ResourceDefault}) {
		t.Errorf("resources %v, want exactly one per distinct name", got)
	}
}

func TestSDSFetchSecrets(t *testing.T) {
	f := newSDSFixture(t)
	e := envoy(t, f.path, "node")
	fetch := func(names ...string) (*discoveryv3.DiscoveryResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		return e.Client().FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: secretTypeURL})
	}
	if _, err := fetch(ResourceDefault); status.Code(err) != codes.Unavailable {
		t.Errorf("before the first certificate: %v, want Unavailable", err)
	}
	svid := f.rotate(t)
	for _, name := range []string{ResourceDefault, ResourceRootCA, webID.String()} {
		resp, err := fetch(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		u, err := sdstest.Check(resp, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name != ResourceRootCA && !u.Chain[0].Equal(svid.Chain[0]) {
			t.Errorf("%s: wrong certificate", name)
		}
	}
	for _, tc := range []struct {
		names []string
		code  codes.Code
	}{
		{[]string{"bogus"}, codes.InvalidArgument},
		{nil, codes.InvalidArgument},
	} {
		if _, err := fetch(tc.names...); status.Code(err) != tc.code {
			t.Errorf("FetchSecrets(%q): %v, want %v", tc.names, err, tc.code)
		}
	}
}

func TestSDSRejectsOtherTypes(t *testing.T) {
	stream := rawStream(t)
	const cluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	if err := stream.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{ResourceDefault}, TypeUrl: cluster}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("wrong type_url: %v, want InvalidArgument", err)
	}
}

func TestSDSDeltaSecretsUnimplemented(t *testing.T) {
	f := newSDSFixture(t)
	e := envoy(t, f.path, "node")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := e.Client().DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unimplemented {
		t.Errorf("DeltaSecrets: %v, want Unimplemented", err)
	}
}

func TestSDSShutdownEndsStreamsCleanly(t *testing.T) {
	tree := testkit.New(t, testkit.Options{})
	pub := newPublisher()
	pub.Publish(mustSnapshot(t, newSVID(t, tree, webID, time.Hour), tree.Bundle))
	sds, err := newSDSServer(sdsConfig{Source: pub, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	sds.Register(g)
	path := serveGRPC(t, g, func() {})
	s := subscribe(t, envoy(t, path, "node"), ResourceDefault)
	next(t, s)
	sds.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := s.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("after Shutdown: %v, want the stream to end with OK (io.EOF)", err)
	}
}

func secretNames(t *testing.T, resp *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var names []string
	for _, r := range resp.GetResources() {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		names = append(names, s.GetName())
	}
	return names
}

func publicOf(t *testing.T, key any) crypto.PublicKey {
	t.Helper()
	k, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("key %T has no public key", key)
	}
	return k.Public()
}

func TestSDSFederatedBundles(t *testing.T) {
	f := newSDSFixture(t)
	svid := newSVID(t, f.tree, webID, time.Hour)
	root := f.tree.Root.Certificate
	fed1, fed2 := federatedRoot(t, "fed1"), federatedRoot(t, "fed2")
	f.pub.Publish(mustFederatedSnapshot(t, svid, f.tree.Bundle, federatedOther(t, fed1)))
	e := envoy(t, f.path, "node")
	rootCA, all := subscribe(t, e, ResourceRootCA), subscribe(t, e, resourceAll)
	other, own := subscribe(t, e, otherTD.IDString()), subscribe(t, e, "spiffe://cluster.local")
	for _, tc := range []struct {
		s    *sdstest.Subscription
		want []*x509.Certificate
	}{{rootCA, []*x509.Certificate{root}}, {all, []*x509.Certificate{root, fed1}}, {other, []*x509.Certificate{fed1}}, {own, []*x509.Certificate{root}}} {
		if u := next(t, tc.s); !sameCerts(u.Roots, tc.want...) {
			t.Errorf("%s: %d roots, want %d", tc.s.Name, len(u.Roots), len(tc.want))
		}
	}

	// Only the federated bundle changes: ALL and other.example are pushed.
	f.pub.Publish(mustFederatedSnapshot(t, svid, f.tree.Bundle, federatedOther(t, fed1, fed2)))
	if u := next(t, all); !sameCerts(u.Roots, root, fed1, fed2) {
		t.Errorf("ALL: %d roots, want 3", len(u.Roots))
	}
	if u := next(t, other); !sameCerts(u.Roots, fed1, fed2) {
		t.Errorf("%s: %d roots, want 2", other.Name, len(u.Roots))
	}
	// Then only the own bundle: had the federated change reached ROOTCA or
	// spiffe://cluster.local, their next response would repeat one root.
	bundle, extra := otherRoot(t, f.tree)
	f.pub.Publish(mustFederatedSnapshot(t, svid, bundle, federatedOther(t, fed1, fed2)))
	for _, s := range []*sdstest.Subscription{rootCA, own} {
		if u := next(t, s); !sameCerts(u.Roots, root, extra) {
			t.Errorf("%s: %d roots, want the new own bundle of 2", s.Name, len(u.Roots))
		}
	}
	if u := next(t, all); !sameCerts(u.Roots, root, extra, fed1, fed2) {
		t.Errorf("ALL: %d roots, want 4", len(u.Roots))
	}

	// Federation ends: a stream for its trust domain ends, naming what is
	// served; a new one is refused.
	f.pub.Publish(mustSnapshot(t, svid, bundle))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := other.Recv(ctx); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "spiffe://cluster.local") {
		t.Errorf("%s after federation ended: %v, want InvalidArgument naming the served bundles", other.Name, err)
	}
	if u := next(t, all); !sameCerts(u.Roots, root, extra) {
		t.Errorf("ALL after federation ended: %d roots, want the own 2", len(u.Roots))
	}
}
