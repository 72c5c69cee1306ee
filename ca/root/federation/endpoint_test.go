package federation

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

func TestEndpointServesSPIFFEBundle(t *testing.T) {
	b := newMesh(t, "b")
	r2 := b.rotate(t)
	fed := newRoot(t, "c root")
	fedBundle, err := trust.NewBundle(fed.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	own, err := trust.NewBundle(b.rootCerts()...)
	if err != nil {
		t.Fatal(err)
	}
	c := spiffeid.RequireTrustDomainFromString("c.example")
	withFed := func(hint time.Duration) *trust.TrustBundle {
		return &trust.TrustBundle{Sequence: 42, RefreshHint: hint, Domains: []trust.DomainBundle{
			{TrustDomain: b.td, Roots: own},
			{TrustDomain: c, Roots: fedBundle, Federated: true},
		}}
	}

	tests := []struct {
		name       string
		td         spiffeid.TrustDomain
		bundle     *trust.TrustBundle
		method     string
		path       string
		wantStatus int
		wantHint   time.Duration
	}{
		{name: "bundle with its hint", td: b.td, bundle: withFed(90 * time.Second), method: http.MethodGet, path: "/", wantStatus: http.StatusOK, wantHint: 90 * time.Second},
		{name: "default hint", td: b.td, bundle: withFed(0), method: http.MethodGet, path: "/", wantStatus: http.StatusOK, wantHint: defaultRefreshHint},
		{name: "other path", td: b.td, bundle: withFed(0), method: http.MethodGet, path: "/bundle", wantStatus: http.StatusNotFound},
		{name: "not GET", td: b.td, bundle: withFed(0), method: http.MethodPost, path: "/", wantStatus: http.StatusMethodNotAllowed},
		{name: "federated domain is not ours to serve", td: c, bundle: withFed(0), method: http.MethodGet, path: "/", wantStatus: http.StatusInternalServerError},
		{name: "trust domain missing", td: spiffeid.RequireTrustDomainFromString("d.example"), bundle: withFed(0), method: http.MethodGet, path: "/", wantStatus: http.StatusInternalServerError},
		{name: "no bundle yet", td: b.td, bundle: nil, method: http.MethodGet, path: "/", wantStatus: http.StatusInternalServerError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{}
			src.set(tc.bundle)
			e, err := NewEndpoint(EndpointConfig{
				TrustDomain: tc.td, Source: src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: spiffeid.RequireFromPath(tc.td, "/x"),
				GetCertificate: (&certBox{}).get, Logger: (&logBuffer{}).logger(),
			})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			e.Handler().ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", rec.Code, tc.wantStatus, rec.Body.String())
			}
			if tc.wantStatus != http.StatusOK {
				if strings.Contains(rec.Body.String(), "BEGIN CERTIFICATE") || strings.Contains(rec.Body.String(), "x5c") {
					t.Errorf("error response carries key material: %q", rec.Body.String())
				}
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			got, err := spiffebundle.Parse(tc.td, rec.Body.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if !sameCerts(got.X509Authorities(), b.rootCerts()) || !got.HasX509Authority(r2.Certificate) {
				t.Errorf("served %d authorities, want b's %d roots", len(got.X509Authorities()), len(b.roots))
			}
			if got.HasX509Authority(fed.Certificate) {
				t.Error("served a federated root as b's own")
			}
			if seq, ok := got.SequenceNumber(); !ok || seq != 42 {
				t.Errorf("sequence %d (set %v), want 42", seq, ok)
			}
			if hint, ok := got.RefreshHint(); !ok || hint != tc.wantHint {
				t.Errorf("refresh hint %v (set %v), want %v", hint, ok, tc.wantHint)
			}
		})
	}
}

func TestEndpointFollowsSource(t *testing.T) {
	b := newMesh(t, "b")
	e, err := NewEndpoint(EndpointConfig{
		TrustDomain: b.td, Source: b.src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: b.endpointID, GetCertificate: (&certBox{}).get,
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func() *spiffebundle.Bundle {
		rec := httptest.NewRecorder()
		e.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		got, err := spiffebundle.Parse(b.td, rec.Body.Bytes())
		if err != nil {
			t.Fatalf("status %d: %v", rec.Code, err)
		}
		return got
	}
	if got := get(); !sameCerts(got.X509Authorities(), b.rootCerts()) {
		t.Fatal("first bundle: wrong roots")
	}
	b.rotate(t)
	got := get()
	if !sameCerts(got.X509Authorities(), b.rootCerts()) || len(b.roots) != 2 {
		t.Fatal("after rotation: wrong roots")
	}
	if seq, _ := got.SequenceNumber(); seq != 2 {
		t.Errorf("sequence %d after rotation, want 2", seq)
	}
}

func TestEndpointConfigValidate(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("b.example")
	id := spiffeid.RequireFromPath(td, "/meshca/federation")
	get := (&certBox{}).get
	src := &fakeSource{}
	tests := []struct {
		name string
		cfg  EndpointConfig
		want string // substring of the error; empty means valid
	}{
		{"spiffe", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: id, GetCertificate: get}, ""},
		{"web getter", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSWeb, GetCertificate: get}, ""},
		{"no trust domain", EndpointConfig{Source: src, Profile: ProfileHTTPSWeb, GetCertificate: get}, "trust domain is required"},
		{"no source", EndpointConfig{TrustDomain: td, Profile: ProfileHTTPSWeb, GetCertificate: get}, "source is required"},
		{"no profile", EndpointConfig{TrustDomain: td, Source: src, GetCertificate: get}, "unknown profile"},
		{"bad profile", EndpointConfig{TrustDomain: td, Source: src, Profile: "https", GetCertificate: get}, "unknown profile"},
		{"web without cert", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSWeb}, "needs a certificate"},
		{"web with both", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSWeb, CertFile: "c", KeyFile: "k", GetCertificate: get}, "not both"},
		{"web cert without key", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSWeb, CertFile: "c"}, "both a certificate file and a key file"},
		{"spiffe without id", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSSPIFFE, GetCertificate: get}, "SPIFFE ID"},
		{"spiffe without getter", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: id}, "needs GetCertificate"},
		{"spiffe with files", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSSPIFFE, SPIFFEID: id, GetCertificate: get, CertFile: "c", KeyFile: "k"}, "not certificate files"},
		{"negative hint", EndpointConfig{TrustDomain: td, Source: src, Profile: ProfileHTTPSWeb, GetCertificate: get, RefreshHint: -time.Second}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if d := tc.cfg.withDefaults(); d.RefreshHint != defaultRefreshHint || d.ShutdownTimeout != defaultShutdownTimeout || d.Logger == nil {
					t.Error("defaults not applied")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEndpointMissingCertificateFiles(t *testing.T) {
	b := newMesh(t, "b")
	dir := t.TempDir()
	_, err := NewEndpoint(EndpointConfig{
		TrustDomain: b.td, Source: b.src, Profile: ProfileHTTPSWeb,
		CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
	})
	if err == nil || !strings.Contains(err.Error(), "tls.crt") {
		t.Fatalf("NewEndpoint with missing files: %v, want an error naming the file", err)
	}
}

// TestEndpointRefusesForeignSVID: an https_spiffe endpoint handed an SVID
// for another ID does not present it, and says why in the log.
func TestEndpointRefusesForeignSVID(t *testing.T) {
	b := newMesh(t, "b")
	other := spiffeid.RequireFromPath(b.td, "/ns/default/sa/web")
	box := &certBox{}
	box.p.Store(tlsCertificate(leafSVID(t, b.roots[0], other)))
	logs := &logBuffer{}
	ep := spiffeEndpoint(t, b, box, logs.logger())

	// Even a client that would accept that ID gets nothing.
	_, err := federation.FetchBundle(t.Context(), b.td, ep.url, federation.WithSPIFFEAuth(b.initialBundle(), other))
	if err == nil {
		t.Fatal("fetch succeeded from an endpoint presenting a foreign SVID")
	}
	if !strings.Contains(logs.String(), "cannot present its X509-SVID") || !strings.Contains(logs.String(), other.String()) {
		t.Errorf("log does not name the cause:\n%s", logs)
	}

	// With the right SVID the same client (now expecting the endpoint ID)
	// gets the bundle.
	box.p.Store(tlsCertificate(leafSVID(t, b.roots[0], b.endpointID)))
	got, err := federation.FetchBundle(t.Context(), b.td, ep.url, federation.WithSPIFFEAuth(b.initialBundle(), b.endpointID))
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(got.X509Authorities(), b.rootCerts()) {
		t.Error("wrong roots")
	}
}

// TestEndpointReloadsCertificateFiles: https_web picks up a renewed pair on
// the next handshake and keeps the previous one while the files are broken.
func TestEndpointReloadsCertificateFiles(t *testing.T) {
	b := newMesh(t, "b")
	web := newWebPKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := web.writeServerCert(t, certFile, keyFile)
	logs := &logBuffer{}
	e, err := NewEndpoint(EndpointConfig{
		TrustDomain: b.td, Source: b.src, Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile, Logger: logs.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ep := serve(t, e, "127.0.0.1:0")
	served := func() *tls.ConnectionState {
		t.Helper()
		d := tls.Dialer{Config: &tls.Config{RootCAs: web.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", ep.addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		st := c.(*tls.Conn).ConnectionState()
		return &st
	}
	if got := served().PeerCertificates[0]; !got.Equal(first) {
		t.Fatalf("serving serial %x, want the first certificate %x", got.SerialNumber, first.SerialNumber)
	}

	second := web.writeServerCert(t, certFile, keyFile)
	if got := served().PeerCertificates[0]; !got.Equal(second) {
		t.Fatalf("after renewal: serving serial %x, want %x", got.SerialNumber, second.SerialNumber)
	}
	if logs.count("certificate reloaded") != 1 {
		t.Errorf("want one reload log line:\n%s", logs)
	}

	writeFileAtomic(t, certFile, []byte("not a certificate"))
	for range 2 {
		if got := served().PeerCertificates[0]; !got.Equal(second) {
			t.Fatalf("broken files: serving serial %x, want the previous %x", got.SerialNumber, second.SerialNumber)
		}
	}
	if n := logs.count("certificate not reloaded"); n != 1 {
		t.Errorf("broken pair logged %d times over two handshakes, want once:\n%s", n, logs)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if got := served().PeerCertificates[0]; !got.Equal(second) {
		t.Fatal("missing key file: previous certificate not kept")
	}

	// And the bundle itself is served over it.
	got, err := federation.FetchBundle(t.Context(), b.td, ep.url, federation.WithWebPKIRoots(web.pool))
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(got.X509Authorities(), b.rootCerts()) {
		t.Error("wrong roots over https_web")
	}
}

// TestEndpointServeStops: Serve returns once its context ends, and the
// port is closed.
func TestEndpointServeStops(t *testing.T) {
	b := newMesh(t, "b")
	web := newWebPKI(t)
	ep := webEndpoint(t, b, web, nil)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: web.pool, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get(ep.url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ep.stop() // fails the test if Serve does not return nil
	client.CloseIdleConnections()
	if _, err := client.Get(ep.url); err == nil {
		t.Fatal("endpoint still answers after Serve returned")
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("b.example")
	testkit.ValidateKeepsConfig(t, &FetcherConfig{}, &FetcherConfig{MinRefreshInterval: time.Hour, MaxRefreshInterval: time.Minute}, &EndpointConfig{}, &EndpointConfig{TrustDomain: td, Source: &fakeSource{}, Profile: ProfileHTTPSWeb, CertFile: "c", KeyFile: "k"})
}
