package issuer_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/ca/root/roottest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// upstreamConfig configures an Upstream of r, trusting the roots r
// publishes now, on r's clock; a nil log discards.
func upstreamConfig(r *roottest.Root, dir, token string, log *slog.Logger) issuer.UpstreamConfig {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return issuer.UpstreamConfig{
		Address: r.Addr, ServerName: roottest.ServerName, Roots: r.Roots(), JoinToken: token, CredentialDir: dir, ServingNames: devHosts,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Now: r.Clock.Now, Logger: log,
	}
}

func mustUpstream(t testing.TB, cfg issuer.UpstreamConfig) *issuer.Upstream {
	t.Helper()
	up, err := issuer.NewUpstream(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return up
}

// runIntermediates runs, until the test ends, the loop that keeps iss on
// an intermediate from up (whose first intermediate came with tb), with
// backoffs short enough for a test.
func runIntermediates(t *testing.T, iss *issuer.Issuer, up *issuer.Upstream, tb *trust.TrustBundle, log *slog.Logger) *issuer.Intermediates {
	t.Helper()
	loop, err := issuer.NewIntermediates(issuer.IntermediatesConfig{
		Issuer: iss, Root: up, Bundle: tb, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "Intermediates.Run", loop.Run)
	return loop
}

func mustIntermediate(t testing.TB, up *issuer.Upstream) (*ca.Authority, *trust.TrustBundle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, tb, err := up.NewIntermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return a, tb
}

// checkIntermediate asserts that a is a CA for td under root, that tb names
// root active, and that a leaf a signs verifies against tb.
func checkIntermediate(t testing.TB, a *ca.Authority, tb *trust.TrustBundle, td string, root *x509.Certificate) {
	t.Helper()
	c := a.Certificate
	if !c.IsCA || !slices.Equal(c.PermittedURIDomains, []string{td}) {
		t.Errorf("intermediate: CA=%v permitted=%q, want a CA for %s", c.IsCA, c.PermittedURIDomains, td)
	}
	if err := c.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate is not signed by %q: %v", root.Subject.CommonName, err)
	}
	if tb.ActiveRoot != trust.Fingerprint(root) {
		t.Errorf("bundle %d names another root active", tb.Sequence)
	}
	leaf, err := a.SignLeaf(ca.LeafRequest{PublicKey: testKey(t, "p256").Public(),
		URIs: []*url.URL{mustURL(t, "spiffe://"+td+"/ns/default/sa/web")}, TTL: time.Minute, Now: c.NotBefore.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, append([]*x509.Certificate{leaf, c}, a.Chain...), tb)
}

// verifyChain verifies chain (leaf first; a trailing root is ignored)
// against tb's own roots.
func verifyChain(t testing.TB, chain []*x509.Certificate, tb *trust.TrustBundle) {
	t.Helper()
	inters := x509.NewCertPool()
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: tb.OwnRoots().Pool(), Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: midLife(chain[0])}); err != nil {
		t.Errorf("chain does not verify against bundle %d: %v", tb.Sequence, err)
	}
}

// verifyUnder verifies chain[0] through chain[1:] against anchor alone,
// at the middle of the leaf's life.
func verifyUnder(chain []*x509.Certificate, anchor *x509.Certificate) error {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(anchor)
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: midLife(chain[0])})
	return err
}

func midLife(c *x509.Certificate) time.Time { return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2) }

func readCert(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	c, err := pemutil.ReadCertificate(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestUpstreamEnrolsThenRenewsAfterRestart(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	root := r.Active()
	dir := filepath.Join(t.TempDir(), "cred")
	log, logs := captureLogs(t)

	up := mustUpstream(t, upstreamConfig(r, dir, tok, log))
	if !up.TrustDomain().IsZero() || up.Cluster() != "" {
		t.Errorf("before enrolment: trust domain %q cluster %q, want none", up.TrustDomain(), up.Cluster())
	}
	a, tb := mustIntermediate(t, up)
	checkIntermediate(t, a, tb, "east.example", root)
	if up.TrustDomain().Name() != "east.example" || up.Cluster() != "east" {
		t.Errorf("enrolled as %q in %q, want east in east.example", up.Cluster(), up.TrustDomain())
	}
	if e, rn, _ := r.Counts(); e != 1 || rn != 0 {
		t.Errorf("%d enrolments and %d renewals, want 1 and 0", e, rn)
	}

	for name, want := range map[string]os.FileMode{"": 0o700, "credential-key.pem": 0o600, "credential.pem": 0o644} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", filepath.Join(dir, name), got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "credential-key.pem.next")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending key left behind: %v", err)
	}
	cred := readCert(t, filepath.Join(dir, "credential.pem"))
	if len(cred.URIs) != 1 || cred.URIs[0].String() != "spiffe://east.example/meshca/cluster/east" || cred.IsCA {
		t.Errorf("credential names %v (CA %v)", cred.URIs, cred.IsCA)
	}
	if err := cred.CheckSignatureFrom(root); err != nil {
		t.Errorf("credential is not signed by the root: %v", err)
	}
	key, err := pemutil.Read(filepath.Join(dir, "credential-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !keyutil.Equal(cred.PublicKey, key.(crypto.Signer).Public()) {
		t.Error("credential key file does not match the credential")
	}

	// A restart: a new Upstream on the same directory renews with the
	// credential; no token needed.
	up2 := mustUpstream(t, upstreamConfig(r, dir, "", log))
	if up2.Cluster() != "east" || up2.TrustDomain().Name() != "east.example" {
		t.Errorf("after restart: cluster %q trust domain %q", up2.Cluster(), up2.TrustDomain())
	}
	a2, tb2 := mustIntermediate(t, up2)
	checkIntermediate(t, a2, tb2, "east.example", root)
	if e, rn, cr := r.Counts(); e != 1 || rn != 1 || cr != 1 {
		t.Errorf("%d enrolments, %d renewals, %d credential renewals; want 1, 1, 1", e, rn, cr)
	}
	if keyutil.Equal(a.Signer.Public(), a2.Signer.Public()) {
		t.Error("the renewed intermediate reuses the first one's key")
	}
	assertNoSecrets(t, logs.String(), tok)
}

func TestUpstreamRejections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, r *roottest.Root, dir string) issuer.UpstreamConfig
		want  []string // substrings of the error
		// rejected: the error is ErrRejected; otherwise it is a gRPC status
		// with this code.
		rejected bool
		code     codes.Code
	}{
		{
			name: "unknown join token",
			setup: func(t *testing.T, r *roottest.Root, dir string) issuer.UpstreamConfig {
				r.AddCluster("east", "east.example")
				return upstreamConfig(r, dir, root.JoinTokenPrefix+"forged", nil)
			},
			want: []string{"join token rejected", "meshca admin cluster add", "Unauthenticated"}, rejected: true,
		},
		{
			name: "spent join token",
			setup: func(t *testing.T, r *roottest.Root, dir string) issuer.UpstreamConfig {
				tok := r.AddCluster("east", "east.example")
				mustIntermediate(t, mustUpstream(t, upstreamConfig(r, t.TempDir(), tok, nil)))
				return upstreamConfig(r, dir, tok, nil)
			},
			want: []string{"join token rejected"}, rejected: true,
		},
		{
			name: "no credential and no token",
			setup: func(t *testing.T, r *roottest.Root, dir string) issuer.UpstreamConfig {
				r.AddCluster("east", "east.example")
				return upstreamConfig(r, dir, "", nil)
			},
			want: []string{"no join token", "meshca admin cluster add"}, rejected: true,
		},
		{
			name: "expired credential and no token",
			setup: func(t *testing.T, r *roottest.Root, dir string) issuer.UpstreamConfig {
				tok := r.AddCluster("east", "east.example")
				mustIntermediate(t, mustUpstream(t, upstreamConfig(r, dir, tok, nil)))
				cfg := upstreamConfig(r, dir, "", nil)
				cfg.Now = func() time.Time { return time.Now().Add(31 * 24 * time.Hour) }
				return cfg
			},
			want: []string{"expired", "no join token", "meshca admin cluster add"}, rejected: true,
		},
		{
			name: "credential of a revoked cluster",
			setup: func(t *testing.T, r *roottest.Root, dir string) issuer.UpstreamConfig {
				tok := r.AddCluster("east", "east.example")
				mustIntermediate(t, mustUpstream(t, upstreamConfig(r, dir, tok, nil)))
				r.RevokeCluster("east")
				return upstreamConfig(r, dir, "", nil)
			},
			want: []string{"credential", "rejected", "PermissionDenied"}, rejected: true,
		},
		{
			name: "root down",
			setup: func(t *testing.T, r *roottest.Root, dir string) issuer.UpstreamConfig {
				tok := r.AddCluster("east", "east.example")
				mustIntermediate(t, mustUpstream(t, upstreamConfig(r, dir, tok, nil)))
				r.Stop()
				return upstreamConfig(r, dir, "", nil)
			},
			code: codes.Unavailable,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := roottest.New(t)
			dir := t.TempDir()
			log, logs := captureLogs(t)
			cfg := tc.setup(t, r, dir)
			cfg.Logger = log
			_, _, err := mustUpstream(t, cfg).NewIntermediate(t.Context())
			if err == nil {
				t.Fatal("NewIntermediate succeeded")
			}
			if got := errors.Is(err, issuer.ErrRejected); got != tc.rejected {
				t.Errorf("errors.Is(%q, ErrRejected) = %v, want %v", err, got, tc.rejected)
			}
			if !tc.rejected && status.Code(err) != tc.code {
				t.Errorf("error %q, want code %v", err, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			assertNoSecrets(t, logs.String())
		})
	}
}

// TestUpstreamRenewsCredentialWithEveryRenewal: the root accepts only a
// cluster's newest credential, so every renewal asks for a new one and the
// issuer stores it.
func TestUpstreamRenewsCredentialWithEveryRenewal(t *testing.T) {
	r := roottest.New(t, func(c *root.Config) { c.IntermediateTTL = 48 * time.Hour })
	tok := r.AddCluster("east", "east.example")
	root := r.Active()
	dir := t.TempDir()
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, dir, tok, log))
	mustIntermediate(t, up)
	prev := readCert(t, filepath.Join(dir, "credential.pem"))
	for i := 1; i <= 2; i++ {
		r.Clock.Advance(24 * time.Hour)
		a, tb := mustIntermediate(t, up)
		checkIntermediate(t, a, tb, "east.example", root)
		if _, rn, cr := r.Counts(); rn != i || cr != i {
			t.Fatalf("%d renewals, %d credential renewals; want %d of each", rn, cr, i)
		}
		renewed := readCert(t, filepath.Join(dir, "credential.pem"))
		if renewed.SerialNumber.Cmp(prev.SerialNumber) == 0 || !renewed.NotAfter.After(prev.NotAfter) {
			t.Fatalf("renewal %d: credential.pem still holds the previous credential", i)
		}
		prev = renewed
	}
	if info, err := os.Stat(filepath.Join(dir, "credential-key.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("renewed key file: %v %v", info, err)
	}
	// The renewed credential is what a restart uses.
	mustIntermediate(t, mustUpstream(t, upstreamConfig(r, dir, "", log)))
	if e, rn, cr := r.Counts(); e != 1 || rn != 3 || cr != 3 {
		t.Errorf("%d enrolments, %d renewals, %d credential renewals; want 1, 3, 3", e, rn, cr)
	}
	assertNoSecrets(t, logs.String(), tok)
}

func TestUpstreamFollowsRootRotation(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	root0, initial := r.Active(), r.Roots()
	dir := t.TempDir()
	log, _ := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, dir, tok, log)) // trusts root 0 only
	mustIntermediate(t, up)

	root1 := r.Rotate() // root 1 joins the bundle; root 0 still signs and serves
	a, tb := mustIntermediate(t, up)
	checkIntermediate(t, a, tb, "east.example", root0)
	if n := len(tb.OwnRoots().Roots()); n != 2 {
		t.Fatalf("bundle has %d roots, want 2", n)
	}

	r.Activate(root1) // root 1 signs and serves: Upstream must trust it from the bundle
	a, tb = mustIntermediate(t, up)
	checkIntermediate(t, a, tb, "east.example", root1)
	// The credential under root 0 was replaced with that renewal.
	if err := readCert(t, filepath.Join(dir, "credential.pem")).CheckSignatureFrom(root1); err != nil {
		t.Errorf("credential not renewed under the new root: %v", err)
	}

	r.Retire(root0)
	// A restart still configured with root 0 alone reaches the root: the
	// roots of the last bundle were remembered.
	cfg := upstreamConfig(r, dir, "", log)
	cfg.Roots = initial
	a, tb = mustIntermediate(t, mustUpstream(t, cfg))
	checkIntermediate(t, a, tb, "east.example", root1)

	// Without them (the same credential in a fresh directory), it could not.
	bare := t.TempDir()
	for _, name := range []string{"credential-key.pem", "credential.pem"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bare, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.CredentialDir = bare
	if _, _, err := mustUpstream(t, cfg).NewIntermediate(t.Context()); err == nil {
		t.Error("an issuer that trusts only the retired root reached the root")
	}
}

// watchUpstream runs up.WatchBundle until the test ends and returns a
// function that receives the next bundle and checks it with want.
func watchUpstream(t *testing.T, up *issuer.Upstream) func(want func(*trust.TrustBundle) error) *trust.TrustBundle {
	got := startWatch(t, up)
	return func(want func(*trust.TrustBundle) error) *trust.TrustBundle {
		t.Helper()
		select {
		case tb := <-got:
			if err := want(tb); err != nil {
				t.Fatal(err)
			}
			return tb
		case <-time.After(10 * time.Second):
			t.Fatal("no bundle within 10 s")
		}
		return nil
	}
}

// startWatch runs up.WatchBundle until the test ends, which checks that it
// returned nil, and returns the bundles it delivers.
func startWatch(t *testing.T, up *issuer.Upstream) <-chan *trust.TrustBundle {
	got := make(chan *trust.TrustBundle, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- up.WatchBundle(ctx, func(tb *trust.TrustBundle) { got <- tb }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchBundle returned %v, want nil", err)
		}
	})
	return got
}

// after wants a bundle newer than prev.
func after(prev *trust.TrustBundle) func(*trust.TrustBundle) error {
	return func(tb *trust.TrustBundle) error {
		if tb.Sequence <= prev.Sequence {
			return fmt.Errorf("bundle sequence %d, want one after %d", tb.Sequence, prev.Sequence)
		}
		return nil
	}
}

func TestUpstreamWatchBundleReconnects(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), tok, log))
	_, held := mustIntermediate(t, up)
	next := watchUpstream(t, up)

	// A new trust domain changes the bundle; the one held since
	// enrolment is not sent again.
	r.AddCluster("north", "north.example")
	prev := next(after(held))
	r.Stop()
	r.AddCluster("south", "south.example")
	r.Serve()
	prev = next(after(prev))

	// Root rotation: after root 0 is retired, a reconnection must trust
	// root 1 from the bundle.
	root0 := r.Active()
	root1 := r.Rotate()
	prev = next(after(prev))
	r.Activate(root1)
	prev = next(after(prev))
	r.Retire(root0)
	prev = next(after(prev))
	if n := len(prev.OwnRoots().Roots()); n != 1 {
		t.Fatalf("bundle after retirement has %d roots", n)
	}
	r.Stop()
	r.Serve()
	r.AddCluster("west", "west.example")
	next(after(prev))
	if !strings.Contains(logs.String(), "reconnecting") {
		t.Error("no reconnection logged")
	}
	assertNoSecrets(t, logs.String(), tok)
}

// enrol starts a root with cluster east and returns it and an Upstream of
// it enrolled as east, with the bundle received and its logs.
func enrol(t *testing.T) (*roottest.Root, *issuer.Upstream, *trust.TrustBundle, *testkit.LogBuffer) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), tok, log))
	_, tb := mustIntermediate(t, up)
	assertNoSecrets(t, logs.String(), tok)
	return r, up, tb, logs
}

// is wants the bundle with sequence want.
func is(want uint64) func(*trust.TrustBundle) error {
	return func(tb *trust.TrustBundle) error {
		if tb.Sequence != want {
			return fmt.Errorf("bundle sequence %d, want %d", tb.Sequence, want)
		}
		return nil
	}
}

// TestUpstreamWatchBundleFollowsSequence: a bundle older than the one held
// is ignored, a jump ahead is followed. The older one comes from a replica
// of the root whose clock is behind, which takes over the root's address.
func TestUpstreamWatchBundleFollowsSequence(t *testing.T) {
	r, up, held, logs := enrol(t)
	// The root's clock runs 20 s ahead of real time: within the 30 s
	// certificates are backdated by, so TLS works either way.
	r.Clock.Advance(20 * time.Second)
	next := watchUpstream(t, up)

	r.AddCluster("north", "north.example") // the bundle held since enrolment is not sent again
	prev := next(after(held))
	if want := r.Bundle().Sequence; prev.Sequence != want {
		t.Fatalf("bundle %d received, want the one published, %d", prev.Sequence, want)
	}

	// A replica on the same store numbers its bundles by its own clock
	// (milliseconds): older ones. Its clock starts 10 s before the bundle
	// held, however long the test took to get here.
	behind := &roottest.Clock{}
	behind.Advance(time.Until(time.UnixMilli(int64(prev.Sequence)).Add(-10 * time.Second)))
	replica := roottest.New(t, func(c *root.Config) { c.Store, c.Keys, c.Now = r.Store, r.Config.Keys, behind.Now })
	older := replica.Bundle().Sequence
	if older >= prev.Sequence {
		t.Fatalf("the replica publishes bundle %d, want one older than %d", older, prev.Sequence)
	}
	r.Stop()
	replica.Stop()
	replica.Addr = r.Addr
	replica.Serve()
	testkit.Eventually(t, 10*time.Second, "older bundle ignored", func() error {
		if !strings.Contains(logs.String(), fmt.Sprintf(`"msg":"ignoring a trust bundle that is not newer","sequence":%d`, older)) {
			return errNotYet
		}
		return nil
	})

	behind.Advance(40 * time.Second) // 30 s ahead of the bundle held: the next one jumps ahead
	replica.AddCluster("south", "south.example")
	ahead := replica.Bundle().Sequence
	if ahead < prev.Sequence+10_000 {
		t.Fatalf("the replica publishes bundle %d, want one well ahead of %d", ahead, prev.Sequence)
	}
	next(is(ahead))
}

func TestUpstreamIgnoresBundlesNotSignedByTrustedRoot(t *testing.T) {
	r, up, enrolled, logs := enrol(t)
	if err := enrolled.VerifySignature(r.Roots(), time.Now()); err != nil {
		t.Fatalf("bundle from enrolment: %v", err)
	}
	tampering := serveTampering(t, r)

	got := startWatch(t, up)

	// A rogue root that also lists itself, and an unsigned bundle: skipped.
	rogue, err := ca.NewRoot(ca.RootConfig{Signer: newKey(t), CommonName: "rogue root"})
	if err != nil {
		t.Fatal(err)
	}
	tampering.setTamper(func(tb *trust.TrustBundle) *trust.TrustBundle {
		out := unsigned(t, tb)
		for i, d := range out.Domains {
			roots, err := trust.NewBundle(append(d.Roots.Roots(), rogue.Certificate)...)
			if err != nil {
				t.Error(err)
			}
			out.Domains[i].Roots = roots
		}
		return resigned(t, out, rogue)
	})
	r.AddCluster("north", "north.example")
	testkit.Eventually(t, 10*time.Second, "rogue bundle skipped", func() error {
		if !strings.Contains(logs.String(), "signed by an untrusted root") {
			return errNotYet
		}
		return nil
	})
	tampering.setTamper(func(tb *trust.TrustBundle) *trust.TrustBundle { return unsigned(t, tb) })
	r.AddCluster("south", "south.example")
	testkit.Eventually(t, 10*time.Second, "unsigned bundle skipped", func() error {
		if !strings.Contains(logs.String(), "is not signed") {
			return errNotYet
		}
		return nil
	})
	select {
	case tb := <-got:
		t.Fatalf("bundle %d (signed %v) was accepted", tb.Sequence, tb.IsSigned())
	default:
	}
	// Renewal refuses them too.
	if _, _, err := up.NewIntermediate(t.Context()); !errors.Is(err, trust.ErrUnsigned) {
		t.Fatalf("renewal with an unsigned bundle: %v, want ErrUnsigned", err)
	}

	// Signed by the active root again: accepted.
	tampering.setTamper(func(tb *trust.TrustBundle) *trust.TrustBundle { return tb })
	r.AddCluster("west", "west.example")
	select {
	case tb := <-got:
		if want := r.Bundle().Sequence; tb.Sequence != want {
			t.Errorf("bundle %d accepted, want %d", tb.Sequence, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the signed bundle was not accepted")
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"ignoring a trust bundle whose signature does not verify`) {
		t.Error("skipped bundles not logged as warnings")
	}
}

// A cluster's issuer serves under the root's host name with a certificate
// from its intermediate (signed by the same root): the issuer's client of
// the root refuses it at the handshake, so neither the join token nor the
// credential's renewal request reaches it.
func TestUpstreamRefusesIssuerPosingAsRoot(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	dir := t.TempDir()
	mustIntermediate(t, mustUpstream(t, upstreamConfig(r, dir, tok, nil)))

	// The root service never names its own host in an intermediate: sign
	// it with the root's key directly.
	key := newKey(t)
	inter, err := activeRootAuthority(t, r).SignIntermediate(ca.IntermediateRequest{
		PublicKey: key.Public(), TrustDomain: spiffeid.RequireTrustDomainFromString("west.example"), Cluster: "west",
		ServingNames: []string{roottest.ServerName}, Now: r.Clock.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	west, err := ca.NewAuthority(inter, key)
	if err != nil {
		t.Fatal(err)
	}
	servingKey := newKey(t)
	leaf, err := west.SignLeaf(ca.LeafRequest{
		PublicKey: servingKey.Public(), DNSNames: []string{roottest.ServerName}, TTL: time.Hour, Now: r.Clock.Now(),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	impostor := &countingServer{}
	addr := impostor.serve(t, []*x509.Certificate{leaf, inter}, &tls.Certificate{PrivateKey: servingKey})

	for name, cfg := range map[string]issuer.UpstreamConfig{
		"enrol with a join token": upstreamConfig(r, t.TempDir(), r.AddCluster("north", "north.example"), nil),
		"renew with a credential": upstreamConfig(r, dir, "", nil),
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Address = addr
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _, err := mustUpstream(t, cfg).NewIntermediate(ctx)
			if err == nil || !strings.Contains(err.Error(), "want the meshca root") {
				t.Fatalf("NewIntermediate from an issuer posing as the root: %v, want a refused handshake", err)
			}
			if n := impostor.count(); n != 0 {
				t.Fatalf("%d requests reached the impostor", n)
			}
		})
	}
}

func TestUpstreamRemovesTheSpentJoinTokenFile(t *testing.T) {
	r := roottest.New(t)
	tok := r.AddCluster("east", "east.example")
	tokenFile := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A token the root refuses is kept: the operator fixes the root
	// side and the same file may be used again.
	cfg := upstreamConfig(r, filepath.Join(t.TempDir(), "cred"), "not-"+tok, nil)
	cfg.JoinTokenFile = tokenFile
	if _, _, err := mustUpstream(t, cfg).NewIntermediate(t.Context()); !errors.Is(err, issuer.ErrRejected) {
		t.Fatalf("enrolment with a refused token: %v, want ErrRejected", err)
	}
	if _, err := os.Stat(tokenFile); err != nil {
		t.Fatalf("the file of a refused token: %v, want it kept", err)
	}

	cfg = upstreamConfig(r, filepath.Join(t.TempDir(), "cred"), tok, nil)
	cfg.JoinTokenFile = tokenFile
	mustIntermediate(t, mustUpstream(t, cfg))
	if _, err := os.Stat(tokenFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("join token file after enrolment: %v, want it removed", err)
	}
}
