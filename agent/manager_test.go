package agent

import (
	"crypto/rsa"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/rotation"
	"github.com/meshca/meshca/trust"
)

// managerFixture runs a Manager and its rotation loop against a fake
// fetcher. It must be built inside a synctest bubble: the loop runs on fake
// time, so hours pass in milliseconds.
type managerFixture struct {
	tree       *testkit.Tree
	fetcher    *fakeFetcher
	pub        *publisher
	mgr        *manager
	tokenFile  string
	bundleFile string
	outDir     string
	logs       *logBuffer
}

func startManager(t *testing.T, tweak func(*managerConfig)) *managerFixture {
	t.Helper()
	dir := t.TempDir()
	f := &managerFixture{
		tree: testkit.New(t, testkit.Options{Now: time.Now()}), pub: newPublisher(), logs: &logBuffer{},
		tokenFile: filepath.Join(dir, "token"), bundleFile: filepath.Join(dir, "bundle.pem"), outDir: filepath.Join(dir, "out"),
	}
	f.fetcher = &fakeFetcher{tree: f.tree, id: webID, ttl: time.Hour}
	writeTestFile(t, f.tokenFile, "token-1")
	writeTestFile(t, f.bundleFile, string(f.tree.Bundle.PEM()))
	cfg := managerConfig{
		Fetcher: f.fetcher, Publisher: f.pub, TokenFile: f.tokenFile, CABundleFile: f.bundleFile, Logger: f.logs.logger(),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	var err error
	if f.mgr, err = newManager(cfg); err != nil {
		t.Fatal(err)
	}
	loop, err := rotation.New(rotation.Config{Renewer: f.mgr, Logger: f.logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Go(t, "loop", loop.Run)
	synctest.Wait() // the first renewal has happened
	return f
}

func (f *managerFixture) current() *snapshot {
	s, _ := f.pub.Current()
	return s
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestManagerRotatesForHoursOfFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		type change struct {
			at   time.Time
			snap *snapshot
		}
		changes := []change{{time.Now(), f.current()}}
		_, changed := f.pub.Current()
		for range 24 * 60 { // 24 hours, checked every minute
			time.Sleep(time.Minute)
			if err := f.mgr.Ready(); err != nil {
				t.Fatalf("not ready at %v: %v", time.Now(), err)
			}
			select {
			case <-changed:
				var s *snapshot
				s, changed = f.pub.Current()
				changes = append(changes, change{time.Now(), s})
			default:
			}
		}
		// A 1h certificate is renewed between 24 and 36 minutes after it
		// arrived: 40 to 60 renewals in 24 hours.
		if n := len(changes) - 1; n < 40 || n > 60 {
			t.Errorf("%d renewals in 24h, want 40..60", n)
		}
		for i := 1; i < len(changes); i++ {
			prev, cur := changes[i-1], changes[i]
			if gap := cur.at.Sub(prev.at); gap < 24*time.Minute || gap > 37*time.Minute {
				t.Errorf("renewal %d came %v after the previous one, want 24m..36m", i, gap)
			}
			if cur.snap.SVIDVersion() == prev.snap.SVIDVersion() {
				t.Errorf("renewal %d published the same certificate", i)
			}
			if cur.snap.BundleVersion() != prev.snap.BundleVersion() {
				t.Errorf("renewal %d changed the bundle", i)
			}
		}
	})
}

func TestManagerServesUntilExpiryThenNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		first := f.current()
		f.fetcher.setErr(status.Error(codes.Unavailable, "connection refused"))

		time.Sleep(59 * time.Minute)
		if err := f.mgr.Ready(); err != nil {
			t.Errorf("not ready with a valid certificate: %v", err)
		}
		if f.current() != first {
			t.Error("the snapshot changed while every renewal failed")
		}
		time.Sleep(2 * time.Minute) // past NotAfter
		err := f.mgr.Ready()
		if err == nil {
			t.Fatal("ready with an expired certificate")
		}
		for _, want := range []string{"expired at", first.SVIDVersion(), "Unavailable", "connection refused"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("readiness error %q does not mention %q", err, want)
			}
		}
		rec := httptest.NewRecorder()
		ops.Handler(nil, f.mgr.checks()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "expired at") {
			t.Errorf("/readyz: %d %q, want 503 saying the certificate expired", rec.Code, rec.Body.String())
		}
		f.logs.waitFor(t, "certificate renewal failed", `"expired":true`)

		// The issuer comes back: the next retry (at most 30 s away)
		// recovers without help.
		f.fetcher.setErr(nil)
		time.Sleep(30*time.Second + time.Millisecond)
		if err := f.mgr.Ready(); err != nil {
			t.Errorf("not ready 30 s after the issuer came back: %v", err)
		}
	})
}

// TestManagerNotReadyWithoutFiles checks that an agent keeping output
// files is not ready until they hold its certificate: a reader that waits
// for readiness must find them.
func TestManagerNotReadyWithoutFiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		blocker := filepath.Join(t.TempDir(), "blocker")
		writeTestFile(t, blocker, "a file where the output directory's parent should be")
		out := filepath.Join(blocker, "out")
		f := startManager(t, func(c *managerConfig) { c.OutputDir = out })
		if !f.current().Valid(time.Now()) {
			t.Fatal("no certificate after the first renewal")
		}
		err := f.mgr.Ready()
		if err == nil || !strings.Contains(err.Error(), "not written") {
			t.Fatalf("Ready with the files unwritable: %v, want an error saying they are not written", err)
		}
		if err := os.Remove(blocker); err != nil {
			t.Fatal(err)
		}
		time.Sleep(40 * time.Minute) // past the renewal of the 1h certificate
		if err := f.mgr.Ready(); err != nil {
			t.Fatalf("not ready after the renewal wrote the files: %v", err)
		}
		if _, err := os.Stat(filepath.Join(out, bundleFile)); err != nil {
			t.Fatalf("ready without %s: %v", bundleFile, err)
		}
	})
}

func TestManagerRefusalBacksOffLong(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		f.fetcher.setErr(status.Error(codes.Unauthenticated, "authentication failed"))
		time.Sleep(time.Hour)
		tokens, _ := f.fetcher.calls()
		// One success, the renewal at ~30m that was refused, then one try
		// every 5 minutes (±20%): well under 20 calls, where exponential
		// backoff capped at 30 s would have made about 60.
		if n := len(tokens); n < 4 || n > 12 {
			t.Errorf("%d fetches in an hour of refusals, want a slow retry", n)
		}
		f.logs.waitFor(t, "refused by the issuer", "Unauthenticated", `"level":"ERROR"`)
	})
}

func TestManagerReadsTokenForEveryRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		writeTestFile(t, f.tokenFile, "token-2\n")
		time.Sleep(40 * time.Minute)
		tokens, _ := f.fetcher.calls()
		if len(tokens) != 2 || tokens[0] != "token-1" || tokens[1] != "token-2" {
			t.Errorf("tokens sent %q, want the file's content at each renewal", tokens)
		}
		if strings.Contains(f.logs.String(), "token-") {
			t.Error("a token appeared in the log")
		}
	})
}

func TestManagerBundleChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, nil)
		before := f.current()
		if got := before.Bundle().Roots(); len(got) != 1 {
			t.Fatalf("bundle has %d roots, want 1", len(got))
		}
		_, changed := f.pub.Current()

		// The CA bundle file gains a root: pushed at the next renewal, and
		// used to authenticate the issuer.
		fileBundle, fileRoot := otherRoot(t, f.tree)
		writeTestFile(t, f.bundleFile, string(fileBundle.PEM()))
		time.Sleep(40 * time.Minute)
		after := f.current()
		if !bundleHas(after.Bundle(), fileRoot) || after.BundleVersion() == before.BundleVersion() {
			t.Error("the CA bundle file's new root was not published")
		}
		if !bundleHas(f.fetcher.lastRoots(), fileRoot) {
			t.Error("the issuer connection does not trust the CA bundle file's new root")
		}
		select {
		case <-changed:
		default:
			t.Error("subscribers were not told")
		}

		// The fetcher reports one more verified root (the real fetcher
		// returns the configured roots; a bundle watch will add others).
		other, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "response-root"), CommonName: "new root"})
		if err != nil {
			t.Fatal(err)
		}
		f.fetcher.setExtraRoot(other.Certificate)
		time.Sleep(40 * time.Minute)
		if b := f.current().Bundle(); !bundleHas(b, other.Certificate) || !bundleHas(b, fileRoot) || len(b.Roots()) != 3 {
			t.Errorf("bundle has %d roots, want the file's two and the response's root", len(b.Roots()))
		}
	})
}

func TestManagerWritesFiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, func(c *managerConfig) { c.OutputDir = filepath.Join(filepath.Dir(c.TokenFile), "out") })
		check := func() {
			t.Helper()
			snap := f.current()
			cert, err := pemutil.ReadCertificateBundle(filepath.Join(f.outDir, certFile))
			if err != nil {
				t.Fatal(err)
			}
			if serialOf(cert[0]) != snap.SVIDVersion() {
				t.Errorf("cert.pem holds serial %s, want %s", serialOf(cert[0]), snap.SVIDVersion())
			}
			key, err := pemutil.Read(filepath.Join(f.outDir, keyFile))
			if err != nil {
				t.Fatal(err)
			}
			if pub, err := keyutil.PublicKey(key); err != nil || !keyutil.Equal(pub, cert[0].PublicKey) {
				t.Error("key.pem does not match cert.pem")
			}
			if fi, err := os.Stat(filepath.Join(f.outDir, keyFile)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key.pem mode: %v %v, want 0600", fi.Mode().Perm(), err)
			}
		}
		check()
		time.Sleep(40 * time.Minute)
		check()
	})
}

func TestManagerKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := startManager(t, func(c *managerConfig) { c.KeyType = KeyRSA2048 })
		time.Sleep(40 * time.Minute)
		_, keys := f.fetcher.calls()
		if len(keys) != 2 {
			t.Fatalf("%d fetches, want 2", len(keys))
		}
		for _, k := range keys {
			if _, ok := k.(*rsa.PrivateKey); !ok {
				t.Errorf("key is %T, want RSA", k)
			}
		}
		if keyutil.Equal(keys[0].Public(), keys[1].Public()) {
			t.Error("the same key was used for two renewals")
		}
	})
}

func TestHealthHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		get := func(h http.Handler, path string) (int, string) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			body, _ := io.ReadAll(rec.Body)
			return rec.Code, string(body)
		}
		tree := testkit.New(t, testkit.Options{Now: time.Now()})
		dir := t.TempDir()
		writeTestFile(t, filepath.Join(dir, "b.pem"), string(tree.Bundle.PEM()))
		fetcher := &fakeFetcher{tree: tree, id: webID, ttl: time.Hour}
		pub := newPublisher()
		m, err := newManager(managerConfig{Fetcher: fetcher, Publisher: pub, TokenFile: filepath.Join(dir, "missing-token"),
			CABundleFile: filepath.Join(dir, "b.pem"), Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		h := ops.Handler(nil, m.checks())
		if code, body := get(h, "/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("/healthz: %d %q", code, body)
		}
		if code, body := get(h, "/readyz"); code != 503 || body != "not ready: certificate: none yet; no renewal attempted yet\n" {
			t.Errorf("/readyz before any attempt: %d %q", code, body)
		}
		if _, err := m.Renew(t.Context()); err == nil {
			t.Fatal("renewal without a token file succeeded")
		}
		if code, body := get(h, "/readyz"); code != 503 || !strings.Contains(body, "not ready: certificate: none yet; last renewal attempt") || !strings.Contains(body, "missing-token") {
			t.Errorf("/readyz after a failed attempt: %d %q", code, body)
		}
		writeTestFile(t, filepath.Join(dir, "missing-token"), "tok")
		if _, err := m.Renew(t.Context()); err != nil {
			t.Fatal(err)
		}
		if code, body := get(h, "/readyz"); code != 200 || body != "ready\n" {
			t.Errorf("/readyz with a certificate: %d %q", code, body)
		}
	})
}

func bundleHas(b *trust.Bundle, c *x509.Certificate) bool {
	for _, r := range b.Roots() {
		if r.Equal(c) {
			return true
		}
	}
	return false
}
