package root

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/ca/root/federation"
	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// The federation package plugs in on both sides.
var (
	_ Federated               = (*federation.Fetcher)(nil)
	_ federation.BundleSource = (*Root)(nil)
)

func TestNewCreatesFirstRootOnce(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TrustDomains = []string{"example.org"} })

	roots := h.root.Roots()
	if len(roots) != 1 || roots[0].State != RootActive {
		t.Fatalf("roots after first start: %+v, want one active root", roots)
	}
	first := roots[0]
	if !first.ActivateAt.Equal(sec(h.clock.Now())) {
		t.Errorf("first root activates at %v, want now (%v)", first.ActivateAt, h.clock.Now())
	}
	info, err := os.Stat(filepath.Join(h.cfg.Keys.(FileKeys).Dir, first.KeyRef))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s: %v, mode %v; want mode 0600", first.KeyRef, err, info.Mode().Perm())
	}
	if evs := h.events("root.create"); len(evs) != 1 || evs[0].Actor != "system:root-init" {
		t.Fatalf("audit events root.create: %+v, want one by system:root-init", evs)
	}

	b, _ := h.root.Current()
	d, ok := b.Domain(spiffeid.RequireTrustDomainFromString("example.org"))
	if !ok || len(d.Roots.Roots()) != 1 || !d.Roots.Roots()[0].Equal(first.Cert) || d.Federated {
		t.Fatalf("bundle domain example.org: %+v, %v; want the first root", d, ok)
	}
	if b.ActiveRoot != trust.Fingerprint(first.Cert) {
		t.Error("bundle does not name the first root as active")
	}
	if b.Sequence != uint64(h.clock.Now().UnixMilli()) {
		t.Errorf("first sequence %d, want now in ms (%d)", b.Sequence, h.clock.Now().UnixMilli())
	}

	// A second start on the same store keeps the root.
	h.clock.Advance(time.Second)
	again := h.start()
	if r := again.Roots(); len(r) != 1 || !r[0].Cert.Equal(first.Cert) {
		t.Fatalf("roots after restart: %d, want the same one", len(r))
	}
	if n := len(h.events("root.create")); n != 1 {
		t.Fatalf("%d roots created after restart, want 1 in total", n)
	}
}

func TestNewFailsWhenStoreIsDown(t *testing.T) {
	db := downRoots{openSQLite(t, nil)}
	_, err := New(context.Background(), Config{Store: db, Keys: FileKeys{Dir: t.TempDir()}, Hosts: []string{"localhost"}})
	if !errors.Is(err, errStoreDown) {
		t.Fatalf("New with the store down: %v, want it to wrap the store's error", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Store: openSQLite(t, nil), Keys: FileKeys{Dir: "x"}, Hosts: []string{"root.example", "10.0.0.1"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no store":          func(c *Config) { c.Store = nil },
		"no keys":           func(c *Config) { c.Keys = nil },
		"no hosts":          func(c *Config) { c.Hosts = nil },
		"bad host":          func(c *Config) { c.Hosts = []string{"http://x"} },
		"bad trust domain":  func(c *Config) { c.TrustDomains = []string{"Not A TD"} },
		"negative tick":     func(c *Config) { c.Tick = -time.Second },
		"token ttl too big": func(c *Config) { c.JoinTokenTTL = 8 * 24 * time.Hour },
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			mod(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}

func TestRestartKeepsRootsAndSequenceGrows(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TrustDomains = []string{"example.org"} })
	h.clock.Advance(time.Minute)
	next, err := h.root.rotate(context.Background(), 0, "admin:test", false)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := h.root.Current()
	if len(before.Domains[0].Roots.Roots()) != 2 {
		t.Fatal("rotated root is not in the bundle")
	}

	h.clock.Advance(time.Second)
	h.root = h.start()
	after, _ := h.root.Current()
	if !equalButCRLs(after, before) {
		t.Fatal("the bundle changed across a restart")
	}
	if after.Sequence <= before.Sequence {
		t.Fatalf("sequence went from %d to %d across a restart", before.Sequence, after.Sequence)
	}
	roots := h.root.Roots()
	if len(roots) != 2 || roots[0].State != RootActive || roots[1].State != RootPrepared ||
		!roots[1].Cert.Equal(next.Cert) {
		t.Fatalf("roots after restart: %v", states(roots))
	}
	// The restarted root loads the active key from its file and signs.
	token := h.addCluster("east", "east.example")
	iss, err := enroll(t, h.dial(h.serve(), nil), token)
	if err != nil {
		t.Fatalf("enrol after restart: %v", err)
	}
	if !signedBy(iss.inter, roots[0].Cert, h.clock.Now()) {
		t.Fatal("intermediate after restart is not signed by the active root")
	}
}

func TestAutoRotate(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, func(c *Config) {
		c.RootTTL = 30 * time.Hour
		c.PropagationDelay = time.Hour
		c.AutoRotate = true
		c.Registerer = reg
	})
	defer testkit.Go(t, "Run", h.root.Run)()

	h.clock.Advance(19 * time.Hour) // 11h of 30h left: more than 1/3
	time.Sleep(3 * h.cfg.Tick)
	if n := len(h.root.Roots()); n != 1 {
		t.Fatalf("%d roots with more than 1/3 of the life left, want 1", n)
	}

	h.clock.Advance(2 * time.Hour) // 9h left
	testkit.Eventually(t, 5*time.Second, "automatic rotation", func() error {
		if n := len(h.root.Roots()); n != 2 {
			return fmt.Errorf("%d roots, want 2", n)
		}
		return nil
	})
	roots := h.root.Roots()
	if roots[0].State != RootActive || roots[1].State != RootPrepared {
		t.Fatalf("after automatic rotation: %v, want active, prepared", states(roots))
	}
	if !roots[1].ActivateAt.Equal(sec(h.clock.Now().Add(time.Hour))) {
		t.Errorf("new root activates at %v, want in the propagation delay", roots[1].ActivateAt)
	}
	if evs := h.events("root.create"); len(evs) != 2 || evs[1].Actor != "system:auto-rotate" {
		t.Fatalf("root.create events: %+v", evs)
	}
	time.Sleep(3 * h.cfg.Tick) // a newer root exists: no further rotation
	if n := len(h.root.Roots()); n != 2 {
		t.Fatalf("%d roots after more ticks, want 2", n)
	}

	h.clock.Advance(time.Hour + time.Second)
	testkit.Eventually(t, 5*time.Second, "activation of the new root", func() error {
		if b, _ := h.root.Current(); b.ActiveRoot != trust.Fingerprint(roots[1].Cert) {
			return errors.New("the active root is still the old one")
		}
		return nil
	})
	if got := gaugeValue(t, reg, "root", fingerprintHex(roots[1].Cert)); got != float64(roots[1].Cert.NotAfter.Unix()) {
		t.Errorf("expiry gauge of the new root: %v, want %d", got, roots[1].Cert.NotAfter.Unix())
	}
}

func TestExpiryAlarm(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, func(c *Config) { c.RootTTL = 60 * time.Hour; c.Registerer = reg })
	root := h.activeRoot()
	if got := gaugeValue(t, reg, "root", fingerprintHex(root)); got != float64(root.NotAfter.Unix()) {
		t.Fatalf("expiry gauge %v, want NotAfter %d", got, root.NotAfter.Unix())
	}

	h.clock.Advance(49 * time.Hour) // 11h of 60h left: more than 1/6
	h.refresh()
	if strings.Contains(h.logs.String(), "expires soon") {
		t.Fatal("warned with more than 1/6 of the life left")
	}
	h.clock.Advance(2 * time.Hour) // 9h left
	h.refresh()
	h.refresh()
	if n := countLines(h.logs.String(), "level=WARN msg=\"root CA expires soon\""); n != 1 {
		t.Fatalf("%d expiry warnings, want 1:\n%s", n, h.logs.String())
	}
	h.clock.Advance(warnInterval)
	h.refresh()
	if n := countLines(h.logs.String(), "root CA expires soon"); n != 2 {
		t.Fatalf("%d expiry warnings after another hour, want 2", n)
	}

	// Once the root has expired it leaves the bundle and the gauge.
	h.clock.Advance(10 * time.Hour)
	h.refresh()
	if got := gaugeValue(t, reg, "root", fingerprintHex(root)); got != -1 {
		t.Errorf("expired root still exported: %v", got)
	}
	if !strings.Contains(h.logs.String(), "no active root") {
		t.Error("no error logged with no active root")
	}
}

// TestTrustDomainsAcrossRestart: a cluster added but not yet enrolled is
// published after a restart only when the store can list clusters; an
// enrolled one always is (its intermediate names it).
func TestTrustDomainsAcrossRestart(t *testing.T) {
	for _, listing := range []bool{false, true} {
		t.Run(fmt.Sprintf("listing=%v", listing), func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				if !listing {
					c.Store = storeOnly{c.Store}
				}
			})
			h.addCluster("idle", "idle.example")
			if _, err := enroll(t, h.dial(h.serve(), nil), h.addCluster("east", "east.example")); err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(time.Second)
			h.root = h.start()
			b, _ := h.root.Current()
			_, idle := b.Domain(spiffeid.RequireTrustDomainFromString("idle.example"))
			_, east := b.Domain(spiffeid.RequireTrustDomainFromString("east.example"))
			if !east || idle != listing {
				t.Fatalf("after restart: east.example published %v, idle.example %v; want true, %v", east, idle, listing)
			}
		})
	}
}

func TestFederatedDomains(t *testing.T) {
	fed := newFakeFederated()
	h := newHarness(t, func(c *Config) { c.TrustDomains = []string{"east.example"}; c.Federated = fed })
	defer testkit.Go(t, "Run", h.root.Run)()

	other := testkit.New(t, testkit.Options{TrustDomain: "other.example", Now: h.clock.Now()})
	first, _ := h.root.Current()
	fed.set(
		trust.DomainBundle{TrustDomain: other.TrustDomain, Roots: other.Bundle},
		// A federated bundle for one of our own trust domains is ignored.
		trust.DomainBundle{TrustDomain: spiffeid.RequireTrustDomainFromString("east.example"), Roots: other.Bundle},
	)
	testkit.Eventually(t, 5*time.Second, "federated bundle", func() error {
		if b, _ := h.root.Current(); len(b.Domains) != 2 {
			return fmt.Errorf("%d trust domains in the bundle, want 2", len(b.Domains))
		}
		return nil
	})
	b, _ := h.root.Current()
	if b.Sequence <= first.Sequence {
		t.Errorf("sequence %d after federation, was %d", b.Sequence, first.Sequence)
	}
	d, ok := b.Domain(other.TrustDomain)
	if !ok || !d.Federated || !bytes.Equal(d.Roots.PEM(), other.Bundle.PEM()) {
		t.Fatalf("federated domain: %+v", d)
	}
	own, _ := b.Domain(spiffeid.RequireTrustDomainFromString("east.example"))
	if own.Federated || !own.Roots.Roots()[0].Equal(h.activeRoot()) {
		t.Fatal("a federated bundle replaced an own trust domain")
	}
	if !bytes.Equal(b.OwnRoots().PEM(), trust.EncodeCertificates(h.activeRoot())) {
		t.Fatal("own roots changed")
	}
}

func TestFileKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k := FileKeys{Dir: dir}
	ref1, s1, err := k.NewKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ref2, _, err := k.NewKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ref1 == ref2 || filepath.Base(ref1) != ref1 {
		t.Fatalf("refs %q and %q: want distinct plain file names", ref1, ref2)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("key directory: %v, %v; want mode 0700", err, info.Mode().Perm())
	}
	loaded, err := k.Load(context.Background(), ref1)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s1.Public()) {
		t.Fatal("loaded key differs from the created one")
	}
	for _, bad := range []string{"", "../" + ref1, "/etc/passwd", "sub/" + ref1} {
		if _, err := k.Load(context.Background(), bad); err == nil {
			t.Errorf("Load(%q) succeeded", bad)
		}
	}
	if err := writeNewFile(filepath.Join(dir, ref1), []byte("x")); err == nil {
		t.Fatal("an existing key file was overwritten")
	}
	if _, err := (VaultKeys{}).Load(context.Background(), ref1); err == nil {
		t.Fatal("VaultKeys loaded a file ref")
	}
}

func TestShouldRotate(t *testing.T) {
	now := time.Now()
	root := func(nb, na time.Duration) *ca.Authority {
		a, err := ca.NewRoot(ca.RootConfig{Signer: testkit.Key(t, "root"), Now: now.Add(nb), TTL: na - nb})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	young, old := root(-time.Hour, 9*time.Hour), root(-8*time.Hour, 2*time.Hour)
	st := func(a *ca.Authority, s RootState) RootStatus {
		return RootStatus{RootRecord: RootRecord{Cert: a.Certificate}, State: s}
	}
	for _, tc := range []struct {
		name  string
		roots []RootStatus
		want  bool
	}{
		{"young active", []RootStatus{st(young, RootActive)}, false},
		{"old active", []RootStatus{st(old, RootActive)}, true},
		{"old active with successor", []RootStatus{st(old, RootActive), st(young, RootPrepared)}, false},
		{"only retired", []RootStatus{st(old, RootRetired)}, true},
		{"only prepared", []RootStatus{st(young, RootPrepared)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := shouldRotate(tc.roots, now); got != tc.want {
				t.Fatalf("shouldRotate = %v, want %v", got, tc.want)
			}
		})
	}
}

// gaugeValue reads meshca_ca_expiry_timestamp_seconds{kind, sha256}; -1
// when absent.
func gaugeValue(t testing.TB, reg *prometheus.Registry, kind, sha string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != ops.CAExpiryMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["sha256"] == sha {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func states(roots []RootStatus) []RootState {
	out := make([]RootState, len(roots))
	for i, r := range roots {
		out[i] = r.State
	}
	return out
}
