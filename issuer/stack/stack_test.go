package stack_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/issuer/stack"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/store/postgres"
	"github.com/meshca/meshca/store/postgres/pgtest"
	"github.com/meshca/meshca/store/sqlite"
)

// refuseAll is an attestor that attests nobody: these tests issue nothing.
type refuseAll struct{}

func (refuseAll) Attest(context.Context, attest.Request) (attest.Identity, error) {
	return attest.Identity{}, attest.ErrUnauthenticated
}

// runStack runs a local-root stack over the store open returns until the
// test ends; it returns once the stack serves, with the store it runs on
// and its config.
func runStack(t *testing.T, open func(ctx context.Context) (stack.Store, error), retention *store.RetentionConfig) (stack.Store, stack.Config) {
	t.Helper()
	dir := t.TempDir()
	var db stack.Store
	serving := make(chan struct{})
	cfg := stack.Config{
		Name: "test issuer", TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev",
		DataDir: dir, Listen: "127.0.0.1:0", Hosts: []string{"127.0.0.1"}, Retention: retention,
		OpenStore: func(ctx context.Context, _ *store.Metrics) (stack.Store, error) {
			s, err := open(ctx)
			db = s
			return s, err
		},
		Attestor: func() (attest.Attestor, error) { return refuseAll{}, nil },
		Serving:  func(string, string) { close(serving) },
	}
	startStack(t, cfg, 30*time.Second, serving)
	return db, cfg
}

// startStack runs cfg until the test ends and returns once every one of
// ready is closed; Run returning first, or a wait longer than timeout,
// fails the test. cancel stops the stack earlier; done receives what Run
// returned, and whoever takes it must put it back for the cleanup, which
// reports an error.
func startStack(t *testing.T, cfg stack.Config, timeout time.Duration, ready ...chan struct{}) (cancel context.CancelFunc, done chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done = make(chan error, 1)
	go func() { done <- stack.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for _, ch := range ready {
		select {
		case <-ch:
		case err := <-done:
			t.Fatalf("Run returned before serving: %v", err)
		case <-time.After(timeout):
			t.Fatalf("stack not serving after %v", timeout)
		}
	}
	return cancel, done
}

// The stack prunes expired certificates while it runs: a certificate that
// expired longer ago than the grace period goes, its audit event stays.
func TestRunPrunesExpiredCertificates(t *testing.T) {
	for _, tt := range []struct {
		name string
		open func(t *testing.T) func(ctx context.Context) (stack.Store, error)
	}{
		{"sqlite", func(t *testing.T) func(ctx context.Context) (stack.Store, error) {
			path := filepath.Join(t.TempDir(), "meshca.db")
			return func(ctx context.Context) (stack.Store, error) { return sqlite.Open(ctx, sqlite.Config{Path: path}) }
		}},
		{"postgres", func(t *testing.T) func(ctx context.Context) (stack.Store, error) {
			dsn := pgtest.NewDatabase(t)
			return func(ctx context.Context) (stack.Store, error) { return postgres.Open(ctx, postgres.Config{DSN: dsn}) }
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := runStack(t, tt.open(t), &store.RetentionConfig{Grace: time.Hour, Interval: 50 * time.Millisecond})
			now := time.Now()
			old := store.Certificate{Serial: "01d", SPIFFEID: "spiffe://cluster.local/ns/a/sa/b", Cluster: "dev",
				NotBefore: now.Add(-3 * time.Hour), NotAfter: now.Add(-2 * time.Hour), Fingerprint: "ff"}
			fresh := old
			fresh.Serial, fresh.NotAfter = "f4e54", now.Add(-30*time.Minute) // within the grace period
			for _, c := range []store.Certificate{old, fresh} {
				if err := s.RecordIssuance(t.Context(), c, store.AuditEvent{Actor: "test", Action: "certificate.issue", Serial: c.Serial}); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				_, err := s.Certificate(t.Context(), old.Serial)
				if errors.Is(err, store.ErrNotFound) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("expired certificate still stored after 20s: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := s.Certificate(t.Context(), fresh.Serial); err != nil {
				t.Errorf("certificate within the grace period: %v", err)
			}
			events, err := s.AuditEvents(t.Context(), time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			var issued int
			for _, ev := range events {
				if ev.Action == "certificate.issue" {
					issued++
				}
			}
			if issued != 2 {
				t.Fatalf("certificate.issue audit events after pruning: %d; want both kept", issued)
			}
		})
	}
}

// A retention config the store cannot run is refused before anything
// starts.
func TestValidateRefusesNegativeRetention(t *testing.T) {
	cfg := stack.Config{
		Name: "x", TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Cluster: "dev", DataDir: t.TempDir(),
		OpenStore: func(context.Context, *store.Metrics) (stack.Store, error) { return nil, errors.New("unused") },
		Attestor:  func() (attest.Attestor, error) { return refuseAll{}, nil },
		Retention: &store.RetentionConfig{Grace: -time.Hour},
	}
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate accepted a negative retention grace")
	}
}

// A standalone stack stores the CRLs of its intermediates for the other
// replicas on its store (issuer.SharedCRLs).
func TestRunStoresItsCRLsForTheOtherReplicas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshca.db")
	s, _ := runStack(t, func(ctx context.Context) (stack.Store, error) { return sqlite.Open(ctx, sqlite.Config{Path: path}) }, nil)
	testkit.Eventually(t, 20*time.Second, "the stack's CRL in the store", func() error {
		rows, err := s.IssuerCRLs(t.Context(), time.Now())
		if err != nil {
			return err
		}
		for _, r := range rows {
			rl, err := x509.ParseRevocationList(r.DER)
			if err != nil {
				return err
			}
			if r.Cluster == "dev" && len(r.IssuerChain) > 0 && rl.Number.Int64() == r.Number {
				return nil
			}
		}
		return fmt.Errorf("%d stored CRLs, none of cluster dev", len(rows))
	})
}
