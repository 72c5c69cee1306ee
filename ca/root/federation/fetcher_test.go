package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
)

// TestFederationFollowsRemoteRootRotation: mesh A fetches mesh B's bundle
// over each profile, sees B's roots, follows B through a root rotation
// (the new root added, then the endpoint moved under it and the old root
// dropped) and ignores a bundle with a lower sequence.
func TestFederationFollowsRemoteRootRotation(t *testing.T) {
	for _, profile := range []Profile{ProfileHTTPSSPIFFE, ProfileHTTPSWeb} {
		t.Run(string(profile), func(t *testing.T) {
			b := newMesh(t, "b")
			r1 := b.roots[0]
			rel := Relationship{TrustDomain: b.td, Profile: profile}
			box := &certBox{}
			switch profile {
			case ProfileHTTPSSPIFFE:
				rel.URL = spiffeEndpoint(t, b, box, nil).url
				rel.EndpointSPIFFEID, rel.InitialBundle = b.endpointID, b.initialBundle()
			case ProfileHTTPSWeb:
				web := newWebPKI(t)
				rel.URL, rel.WebRoots = webEndpoint(t, b, web, nil).url, web.pool
			}
			logs := &logBuffer{}
			f, err := NewFetcher(FetcherConfig{Relationships: []Relationship{rel}, Logger: logs.logger()})
			if err != nil {
				t.Fatal(err)
			}
			expect := func(step string, want ...*x509.Certificate) {
				t.Helper()
				d := f.Domains()
				if len(d) != 1 || d[0].TrustDomain != b.td || !d[0].Federated {
					t.Fatalf("%s: domains %+v, want one federated b.example", step, d)
				}
				if !sameCerts(d[0].Roots.Roots(), want) {
					t.Fatalf("%s: %d roots held, want %d (or different ones)", step, len(d[0].Roots.Roots()), len(want))
				}
			}

			// Before any fetch: the initial bundle for https_spiffe, nothing
			// for https_web.
			if profile == ProfileHTTPSSPIFFE {
				expect("initial", r1.Certificate)
			} else if d := f.Domains(); len(d) != 0 {
				t.Fatalf("https_web before a fetch: %d domains, want none", len(d))
			}

			changed := f.Changed()
			if err := f.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			expect("first fetch", r1.Certificate)
			// https_spiffe already held these roots: no change to announce.
			if got, want := closed(changed), profile == ProfileHTTPSWeb; got != want {
				t.Errorf("first fetch: Changed closed = %v, want %v", got, want)
			}
			if st := f.Status()[0]; st.Sequence != 1 || st.LastSuccess.IsZero() || st.Fetches != 1 || st.FetchErrors != 0 {
				t.Errorf("status after first fetch: %+v", st)
			}

			// B prepares a new root: A sees both.
			r2 := b.rotate(t)
			changed = f.Changed()
			if err := f.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			expect("after B added a root", r1.Certificate, r2.Certificate)
			if !closed(changed) {
				t.Error("Changed not closed after B added a root")
			}
			if !strings.Contains(logs.String(), "federated bundle updated") {
				t.Errorf("no update logged:\n%s", logs)
			}

			// B finishes: its endpoint's SVID is now under the new root and
			// the old root is gone. https_spiffe authenticates with the
			// bundle it fetched last, not with the initial one.
			box.p.Store(tlsCertificate(leafSVID(t, r2, b.endpointID)))
			b.publish(t, r2.Certificate)
			changed = f.Changed()
			if err := f.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			expect("after B dropped its old root", r2.Certificate)
			if !closed(changed) {
				t.Error("Changed not closed after B dropped a root")
			}

			// A rolled-back bundle (lower sequence) is ignored.
			b.publishAt(t, 2, r1.Certificate)
			changed = f.Changed()
			if err := f.Refresh(t.Context()); !errors.Is(err, errStaleBundle) {
				t.Fatalf("stale bundle: %v, want ErrStaleBundle", err)
			}
			expect("after a stale bundle", r2.Certificate)
			if closed(changed) {
				t.Error("Changed closed by a stale bundle")
			}
			if st := f.Status()[0]; st.Sequence != 3 || st.FetchErrors != 1 || st.ConsecutiveFailures != 1 {
				t.Errorf("status after stale bundle: %+v", st)
			}
		})
	}
}

// TestFetcherRejectsWrongEndpointID: an endpoint that presents another
// SPIFFE ID than configured is not trusted; the initial bundle stays.
func TestFetcherRejectsWrongEndpointID(t *testing.T) {
	b := newMesh(t, "b")
	initial := b.initialBundle()
	b.rotate(t) // what the endpoint would serve, were it trusted
	ep := spiffeEndpoint(t, b, &certBox{}, nil)
	f, err := NewFetcher(FetcherConfig{Relationships: []Relationship{{
		TrustDomain: b.td, URL: ep.url, Profile: ProfileHTTPSSPIFFE,
		EndpointSPIFFEID: spiffeid.RequireFromPath(b.td, "/spire/server"), InitialBundle: initial,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	changed := f.Changed()
	err = f.Refresh(t.Context())
	if err == nil || !strings.Contains(err.Error(), "unexpected ID") {
		t.Fatalf("Refresh: %v, want an unexpected-ID error", err)
	}
	if got := rootsOf(f.Domains(), b.td); !sameCerts(got, initial.X509Authorities()) {
		t.Fatalf("held %d roots, want the initial bundle's one", len(got))
	}
	if closed(changed) {
		t.Error("Changed closed by a failed fetch")
	}
	st := f.Status()[0]
	if st.ConsecutiveFailures != 1 || st.FetchErrors != 1 || st.LastError == "" || !st.LastSuccess.IsZero() || !st.HasBundle {
		t.Errorf("status: %+v", st)
	}
}

// TestFetcherKeepsLastGoodBundle: after a good fetch, neither an impostor
// at the endpoint's address (an SVID of B's, but not the endpoint's ID,
// serving an attacker's root) nor an unreachable endpoint changes what A
// holds.
func TestFetcherKeepsLastGoodBundle(t *testing.T) {
	b := newMesh(t, "b")
	initial := b.initialBundle()
	b.rotate(t)
	ep := spiffeEndpoint(t, b, &certBox{}, nil)
	f, err := NewFetcher(FetcherConfig{
		Relationships: []Relationship{{
			TrustDomain: b.td, URL: ep.url, Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: b.endpointID, InitialBundle: initial,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := f.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	good := b.rootCerts()
	if got := rootsOf(f.Domains(), b.td); !sameCerts(got, good) {
		t.Fatalf("after the good fetch: %d roots, want %d", len(got), len(good))
	}
	if st := f.Status()[0]; st.LastSuccess.Before(before) || st.LastSuccess.After(after) {
		t.Errorf("LastSuccess %v, want the time of the fetch (between %v and %v)", st.LastSuccess, before, after)
	}

	// The impostor takes over B's endpoint address.
	ep.stop()
	attacker := newRoot(t, "attacker root")
	evil := &mesh{td: b.td, src: &fakeSource{}, roots: []*ca.Authority{attacker},
		endpointID: spiffeid.RequireFromPath(b.td, "/ns/default/sa/compromised")}
	evil.publishAt(t, 100, attacker.Certificate)
	box := &certBox{}
	box.p.Store(tlsCertificate(leafSVID(t, b.roots[0], evil.endpointID)))
	imp, err := NewEndpoint(EndpointConfig{TrustDomain: b.td, Source: evil.src, Profile: ProfileHTTPSSPIFFE,
		SPIFFEID: evil.endpointID, GetCertificate: box.get})
	if err != nil {
		t.Fatal(err)
	}
	impostor := serve(t, imp, ep.addr)

	changed := f.Changed()
	if err := f.Refresh(t.Context()); err == nil || !strings.Contains(err.Error(), "unexpected ID") {
		t.Fatalf("impostor: %v, want an unexpected-ID error", err)
	}
	if got := rootsOf(f.Domains(), b.td); !sameCerts(got, good) {
		t.Fatal("impostor changed the held bundle")
	}

	// Nobody listens any more.
	impostor.stop()
	if err := f.Refresh(t.Context()); err == nil {
		t.Fatal("fetch from a closed port succeeded")
	}
	if got := rootsOf(f.Domains(), b.td); !sameCerts(got, good) {
		t.Fatal("unreachable endpoint changed the held bundle")
	}
	if closed(changed) {
		t.Error("Changed closed by failed fetches")
	}
	st := f.Status()[0]
	if st.ConsecutiveFailures != 2 || st.FetchErrors != 2 || st.Fetches != 3 || st.Sequence != 2 || st.Roots != 2 {
		t.Errorf("status: %+v", st)
	}
}

// TestFetcherRun: the polling loop retries an endpoint that is not up yet,
// picks up its bundle once it is, follows a rotation, and stops with its
// context.
func TestFetcherRun(t *testing.T) {
	b := newMesh(t, "b")
	web := newWebPKI(t)

	// Reserve a port, then leave it closed until the endpoint starts.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}

	logs := &logBuffer{}
	f, err := NewFetcher(FetcherConfig{
		Relationships:      []Relationship{{TrustDomain: b.td, URL: "https://" + addr + "/", Profile: ProfileHTTPSWeb, WebRoots: web.pool}},
		MinRefreshInterval: 5 * time.Millisecond,
		MaxRefreshInterval: 20 * time.Millisecond,
		Logger:             logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			changed := f.Changed()
			if ok() {
				return
			}
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("timed out waiting for %s; status %+v\n%s", what, f.Status(), logs)
			}
		}
	}
	logs.waitFor(t, "federated bundle fetch failed", 2)
	if !strings.Contains(logs.String(), "trust_domain=b.example") {
		t.Errorf("failure log does not name the trust domain:\n%s", logs)
	}
	if st := f.Status()[0]; st.FetchErrors < 2 || st.HasBundle {
		t.Errorf("status while the endpoint is down: %+v", st)
	}

	// The endpoint comes up on that port.
	dir := t.TempDir()
	certFile, keyFile := dir+"/tls.crt", dir+"/tls.key"
	web.writeServerCert(t, certFile, keyFile)
	e, err := NewEndpoint(EndpointConfig{TrustDomain: b.td, Source: b.src, Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, e, addr)
	waitFor("B's first root", func() bool { return sameCerts(rootsOf(f.Domains(), b.td), b.rootCerts()) })

	b.rotate(t)
	waitFor("B's rotated roots", func() bool {
		got := rootsOf(f.Domains(), b.td)
		return len(got) == 2 && sameCerts(got, b.rootCerts())
	})
	if st := f.Status()[0]; st.ConsecutiveFailures != 0 || st.Sequence != 2 {
		t.Errorf("status: %+v", st)
	}
}

func TestRefreshDelay(t *testing.T) {
	var zero FetcherConfig
	if err := zero.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg := zero.withDefaults()
	tests := []struct {
		name     string
		hint     time.Duration
		failures int
		want     time.Duration
	}{
		{"no hint", 0, 0, defaultRefreshInterval},
		{"hint", 90 * time.Second, 0, 90 * time.Second},
		{"hint below minimum", 100 * time.Millisecond, 0, time.Second},
		{"hint above maximum", 24 * time.Hour, 0, time.Hour},
		{"first failure", 0, 1, time.Second},
		{"third failure", 0, 3, 4 * time.Second},
		{"many failures: back to the regular period", 0, 30, defaultRefreshInterval},
		{"failures with a short hint", 2 * time.Second, 5, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := refreshDelay(&cfg, tc.hint, tc.failures); got != tc.want {
				t.Errorf("refreshDelay(%v, %d) = %v, want %v", tc.hint, tc.failures, got, tc.want)
			}
		})
	}
}

func TestFetcherConfigValidate(t *testing.T) {
	b := spiffeid.RequireTrustDomainFromString("b.example")
	c := spiffeid.RequireTrustDomainFromString("c.example")
	id := spiffeid.RequireFromPath(b, "/meshca/federation")
	root := newRoot(t, "b root")
	initial := spiffebundle.FromX509Authorities(b, []*x509.Certificate{root.Certificate})
	spiffe := func(mod func(*Relationship)) FetcherConfig {
		r := Relationship{TrustDomain: b, URL: "https://b.example:8443/", Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: id, InitialBundle: initial}
		if mod != nil {
			mod(&r)
		}
		return FetcherConfig{Relationships: []Relationship{r}}
	}
	web := Relationship{TrustDomain: c, URL: "https://c.example/bundle", Profile: ProfileHTTPSWeb}
	tests := []struct {
		name string
		cfg  FetcherConfig
		want string
	}{
		{"empty", FetcherConfig{}, ""},
		{"spiffe", spiffe(nil), ""},
		{"web", FetcherConfig{Relationships: []Relationship{web}}, ""},
		{"both", FetcherConfig{Relationships: []Relationship{spiffe(nil).Relationships[0], web}}, ""},
		{"duplicate trust domain", FetcherConfig{Relationships: []Relationship{web, web}}, "two relationships"},
		{"no trust domain", spiffe(func(r *Relationship) { r.TrustDomain = spiffeid.TrustDomain{} }), "trust domain is required"},
		{"http url", spiffe(func(r *Relationship) { r.URL = "http://b.example/" }), "want https"},
		{"no url", spiffe(func(r *Relationship) { r.URL = "" }), "want https"},
		{"unknown profile", spiffe(func(r *Relationship) { r.Profile = "spiffe" }), "unknown profile"},
		{"spiffe without id", spiffe(func(r *Relationship) { r.EndpointSPIFFEID = spiffeid.ID{} }), "endpoint SPIFFE ID"},
		{"spiffe id in another domain", spiffe(func(r *Relationship) { r.EndpointSPIFFEID = spiffeid.RequireFromPath(c, "/x") }), "is not in trust domain"},
		{"spiffe without initial bundle", spiffe(func(r *Relationship) { r.InitialBundle = nil }), "initial bundle"},
		{"initial bundle of another domain", spiffe(func(r *Relationship) {
			r.InitialBundle = spiffebundle.FromX509Authorities(c, initial.X509Authorities())
		}), "initial bundle is for"},
		{"empty initial bundle", spiffe(func(r *Relationship) { r.InitialBundle = spiffebundle.New(b) }), "no X.509 authorities"},
		{"web with endpoint id", FetcherConfig{Relationships: []Relationship{{TrustDomain: c, URL: web.URL, Profile: ProfileHTTPSWeb, EndpointSPIFFEID: id}}}, "does not use an endpoint SPIFFE ID"},
		{"refresh bounds", FetcherConfig{MinRefreshInterval: time.Hour, MaxRefreshInterval: time.Minute}, "refresh bounds"},
		{"negative interval", FetcherConfig{RefreshInterval: -time.Second}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFetcher(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestFetcherNoRelationships: an empty Fetcher holds nothing and Run waits
// for its context.
func TestFetcherNoRelationships(t *testing.T) {
	f, err := NewFetcher(FetcherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Domains()) != 0 || len(f.Status()) != 0 {
		t.Fatal("empty fetcher holds something")
	}
	if err := f.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatal(err)
	}
}
