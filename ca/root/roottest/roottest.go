// Package roottest runs the real root service (package ca/root) for tests
// of its clients: over the embedded SQLite store in a temporary directory,
// with file keys, serving RootService and BundleService on a loopback
// listener with the root's own TLS, and driven through AdminService on a
// Unix socket as an operator would drive it.
//
// Its clock runs with real time plus an offset that Advance moves, so that
// TLS between the root and a client on the same clock works while tests
// step over propagation delays and lifetimes without sleeping.
package roottest

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/ca/root"
	"github.com/meshca/meshca/internal/adminapi"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/sqlite"
	"github.com/meshca/meshca/trust"
)

// ServerName is the host name in the root's serving certificate; clients
// dial Addr (on 127.0.0.1) with it as the TLS server name.
const ServerName = "root.test"

// option changes the root's configuration before New starts it.
type option func(*root.Config)

// Clock is real time plus an offset; the zero value is real time.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is time.Now plus the offset.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock d ahead.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// Root is a running root service. Its methods fail the test on error.
type Root struct {
	t testing.TB
	// Addr serves RootService and BundleService over TLS for ServerName.
	Addr string
	// Service is the root service itself.
	Service *root.Root
	// Store is its store.
	Store *sqlite.Store
	// Clock is its clock; clients should use Clock.Now too.
	Clock *Clock
	// Config is what the service was built with (defaults not applied).
	Config root.Config

	admin meshcav1.AdminServiceClient

	mu   sync.Mutex
	stop func() // stops Serve; nil when not serving
}

// New starts a root service with one active root, issuer serving names
// that include the loopback names, an intermediate TTL of
// 1h, a re-evaluation every 20ms and a propagation delay of 10s (shorter
// than the 30s certificates are backdated by, so that clients on real time
// accept what the root signs after Activate); opts change that before it
// starts. Everything stops when the test ends.
func New(t testing.TB, opts ...option) *Root {
	t.Helper()
	r := &Root{t: t, Clock: &Clock{}}
	db, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "root.db"), Now: r.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	r.Store = db
	r.Config = root.Config{
		Store: db,
		Keys:  root.FileKeys{Dir: t.TempDir()},
		Hosts: []string{ServerName},
		// Issuers under test serve on loopback.
		IssuerServingNames: append(slices.Clone(trust.DefaultServingNames), "localhost", "127.0.0.1", "::1"),
		IntermediateTTL:    time.Hour,
		PropagationDelay:   10 * time.Second,
		Tick:               20 * time.Millisecond,
		Logger:             slog.New(slog.DiscardHandler),
		Now:                r.Clock.Now,
	}
	for _, o := range opts {
		o(&r.Config)
	}
	if r.Service, err = root.New(context.Background(), r.Config); err != nil {
		t.Fatalf("root.New: %v", err)
	}
	t.Cleanup(func() { _ = r.Service.Close() })
	r.run(r.Service.Run)
	r.admin = r.serveAdmin()
	r.Serve()
	return r
}

// run runs f until the test ends; f must return nil once its context ends.
func (r *Root) run(f func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("root service: %v", err)
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

func (r *Root) serveAdmin() meshcav1.AdminServiceClient {
	path := filepath.Join(r.t.TempDir(), "admin.sock")
	lis, err := adminapi.ListenUnix(path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.run(func(ctx context.Context) error { return r.Service.ServeAdmin(ctx, lis) })
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = conn.Close() })
	return meshcav1.NewAdminServiceClient(conn)
}

// Serve starts serving on Addr (a loopback port the first time, the same
// one after Stop).
func (r *Root) Serve() {
	r.t.Helper()
	addr := r.Addr
	if addr == "" {
		// A port outside the ephemeral range, which other processes are
		// unlikely to take while Stop has it closed.
		addr = testkit.FreeAddr(r.t)
	}
	var lis net.Listener
	var err error
	for range 100 { // after Stop, the port may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.Addr = lis.Addr().String()
	stop := r.run(func(ctx context.Context) error { return r.Service.Serve(ctx, lis) })
	r.mu.Lock()
	r.stop = stop
	r.mu.Unlock()
}

// Stop stops serving on Addr and closes every connection to it; Serve
// starts again.
func (r *Root) Stop() {
	r.mu.Lock()
	stop := r.stop
	r.stop = nil
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Roots are the roots of the published bundle: what `meshca admin cluster
// add` prints for a new cluster to trust.
func (r *Root) Roots() *trust.Bundle {
	r.t.Helper()
	b := r.Service.OwnRoots()
	if b == nil {
		r.t.Fatal("the root published no roots")
	}
	return b
}

// Bundle is the published trust bundle.
func (r *Root) Bundle() *trust.TrustBundle {
	b, _ := r.Service.Current()
	return b
}

// Active is the certificate of the active root.
func (r *Root) Active() *x509.Certificate {
	r.t.Helper()
	for _, s := range r.Service.Roots() {
		if s.State == root.RootActive {
			return s.Cert
		}
	}
	r.t.Fatal("no active root")
	return nil
}

// AddCluster registers cluster name in trust domain td and returns its
// one-time join token.
func (r *Root) AddCluster(name, td string) string {
	r.t.Helper()
	return r.AddClusterDNS(name, td)
}

// AddClusterDNS is AddCluster for a cluster whose record lists workload
// DNS names (meshca admin cluster add --dns-name).
func (r *Root) AddClusterDNS(name, td string, dnsNames ...string) string {
	r.t.Helper()
	resp, err := r.admin.AddCluster(context.Background(), &meshcav1.AddClusterRequest{Name: name, TrustDomain: td, ShareTrustDomain: true,
		DnsNames: dnsNames})
	if err != nil {
		r.t.Fatalf("add cluster %s: %v", name, err)
	}
	return resp.GetJoinToken()
}

// RevokeCluster revokes cluster name: its issuer can no longer enrol,
// renew or watch.
func (r *Root) RevokeCluster(name string) {
	r.t.Helper()
	if _, err := r.admin.Revoke(context.Background(), &meshcav1.RevokeRequest{
		Target: &meshcav1.RevokeRequest_Cluster{Cluster: name}, Reason: "test"}); err != nil {
		r.t.Fatalf("revoke cluster %s: %v", name, err)
	}
}

// Rotate adds a new root to the bundle and returns it; it signs once
// Activate has moved the clock over the propagation delay.
func (r *Root) Rotate() *x509.Certificate {
	r.t.Helper()
	resp, err := r.admin.RotateRoot(context.Background(), &meshcav1.RotateRootRequest{})
	if err != nil {
		r.t.Fatalf("rotate root: %v", err)
	}
	var next *x509.Certificate
	r.waitFor("the new root in the bundle", func() bool {
		for _, c := range r.Roots().Roots() {
			if fingerprintHex(c) == resp.GetRoot().GetSha256() {
				next = c
				return true
			}
		}
		return false
	})
	return next
}

func fingerprintHex(c *x509.Certificate) string {
	fp := trust.Fingerprint(c)
	return hex.EncodeToString(fp[:])
}

func contains(b *trust.Bundle, c *x509.Certificate) bool {
	return slices.ContainsFunc(b.Roots(), c.Equal)
}

// Activate moves the clock over the propagation delay and waits until the
// root Rotate added is active and signs the published bundle.
func (r *Root) Activate(next *x509.Certificate) {
	r.t.Helper()
	r.Clock.Advance(r.Config.PropagationDelay)
	r.waitFor("the new root active", func() bool {
		return r.Active().Equal(next) && r.Bundle().ActiveRoot == trust.Fingerprint(next)
	})
}

// Retire moves the clock past the last intermediate signed under old and
// waits until old has left the bundle.
func (r *Root) Retire(old *x509.Certificate) {
	r.t.Helper()
	ins, err := r.Store.Intermediates(context.Background(), store.IntermediateFilter{RootFingerprint: fingerprintHex(old)})
	if err != nil {
		r.t.Fatal(err)
	}
	var last time.Time
	for _, in := range ins {
		if in.NotAfter.After(last) {
			last = in.NotAfter
		}
	}
	if d := last.Sub(r.Clock.Now()); d > 0 {
		r.Clock.Advance(d + time.Second)
	}
	r.waitFor("the old root out of the bundle", func() bool { return !contains(r.Roots(), old) })
}

// Counts are how many enrolments, intermediate renewals and credential
// renewals the root recorded.
func (r *Root) Counts() (enrolls, renewals, credRenewals int) {
	r.t.Helper()
	evs, err := r.Store.AuditEvents(context.Background(), time.Time{})
	if err != nil {
		r.t.Fatal(err)
	}
	var inters, creds int
	for _, ev := range evs {
		switch ev.Action {
		case "cluster.enroll":
			enrolls++
		case "intermediate.issue":
			inters++
		case "credential.issue":
			creds++
		}
	}
	return enrolls, inters - enrolls, creds - enrolls
}

// waitFor polls cond (the re-evaluation loop runs on real time) for up to
// 10 s.
func (r *Root) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
