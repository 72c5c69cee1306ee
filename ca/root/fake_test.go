package root

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/store"
)

// fakeStore is an in-memory Store with the contract of store.RootStore:
// times are kept with second precision, UTC, as the real backends do.
type fakeStore struct {
	mu            sync.Mutex
	clusters      map[string]store.Cluster
	tokens        map[string]*fakeToken
	intermediates []store.Intermediate
	roots         []store.Root
	audit         []store.AuditEvent
	revocations   []fakeRevocation
	lastRevID     int64
	certs         map[string]store.Certificate
	credentials   map[string]store.ClusterCredential
	// fail, when set, is returned by every method.
	fail error
}

type fakeRevocation struct {
	store.Revocation
	lifted bool
}

type fakeToken struct {
	tok  store.JoinToken
	used bool
}

var _ Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore {
	return &fakeStore{clusters: map[string]store.Cluster{}, tokens: map[string]*fakeToken{}, certs: map[string]store.Certificate{},
		credentials: map[string]store.ClusterCredential{}}
}

func (s *fakeStore) RecordIssuance(_ context.Context, c store.Certificate, ev store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if _, ok := s.certs[c.Serial]; ok {
		return store.ErrAlreadyExists
	}
	c.NotBefore, c.NotAfter = sec(c.NotBefore), sec(c.NotAfter)
	s.certs[c.Serial] = c
	s.audit = append(s.audit, ev)
	return nil
}

func (s *fakeStore) Certificate(_ context.Context, serial string) (store.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return store.Certificate{}, s.fail
	}
	c, ok := s.certs[serial]
	if !ok {
		return store.Certificate{}, store.ErrNotFound
	}
	return c, nil
}

func sec(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

func (s *fakeStore) AddCluster(_ context.Context, c store.Cluster, tok store.JoinToken, ev store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if old, ok := s.clusters[c.Name]; ok && old.TrustDomain != c.TrustDomain {
		return fmt.Errorf("cluster %s: %w", c.Name, store.ErrAlreadyExists)
	} else if !ok {
		c.CreatedAt = sec(ev.Time)
		s.clusters[c.Name] = c
	}
	if _, ok := s.tokens[tok.Hash]; ok {
		return fmt.Errorf("token: %w", store.ErrAlreadyExists)
	}
	tok.Cluster, tok.ExpiresAt = c.Name, sec(tok.ExpiresAt)
	s.tokens[tok.Hash] = &fakeToken{tok: tok}
	s.audit = append(s.audit, ev)
	return nil
}

func (s *fakeStore) Cluster(_ context.Context, name string) (store.Cluster, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return store.Cluster{}, s.fail
	}
	c, ok := s.clusters[name]
	if !ok {
		return store.Cluster{}, fmt.Errorf("cluster %s: %w", name, store.ErrNotFound)
	}
	return c, nil
}

func (s *fakeStore) RedeemJoinToken(_ context.Context, hash string, now time.Time, ev store.AuditEvent) (store.Cluster, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return store.Cluster{}, s.fail
	}
	t, ok := s.tokens[hash]
	if !ok || t.used || !t.tok.ExpiresAt.After(sec(now)) {
		return store.Cluster{}, fmt.Errorf("join token unknown, used or expired: %w", store.ErrNotFound)
	}
	t.used = true
	ev.Cluster = t.tok.Cluster
	s.audit = append(s.audit, ev)
	return s.clusters[t.tok.Cluster], nil
}

func (s *fakeStore) RecordIntermediate(_ context.Context, in store.Intermediate, ev store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if slices.ContainsFunc(s.intermediates, func(x store.Intermediate) bool { return x.Serial == in.Serial }) {
		return fmt.Errorf("intermediate %s: %w", in.Serial, store.ErrAlreadyExists)
	}
	in.NotBefore, in.NotAfter = sec(in.NotBefore), sec(in.NotAfter)
	s.intermediates = append(s.intermediates, in)
	s.audit = append(s.audit, ev)
	return nil
}

func (s *fakeStore) Intermediates(_ context.Context, f store.IntermediateFilter) ([]store.Intermediate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var out []store.Intermediate
	for _, in := range s.intermediates {
		if f.Cluster != "" && in.Cluster != f.Cluster || f.RootFingerprint != "" && in.RootFingerprint != f.RootFingerprint {
			continue
		}
		if !f.ActiveAt.IsZero() && (in.NotBefore.After(f.ActiveAt) || in.NotAfter.Before(f.ActiveAt)) {
			continue
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b store.Intermediate) int {
		return cmp.Or(a.NotBefore.Compare(b.NotBefore), cmp.Compare(a.Serial, b.Serial))
	})
	return out, nil
}

func (s *fakeStore) AddRoot(_ context.Context, r store.Root, ev store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if slices.ContainsFunc(s.roots, func(x store.Root) bool { return x.Fingerprint == r.Fingerprint }) {
		return fmt.Errorf("root %s: %w", r.Fingerprint, store.ErrAlreadyExists)
	}
	r.AddedAt, r.ActivateAt = sec(r.AddedAt), sec(r.ActivateAt)
	s.roots = append(s.roots, r)
	s.audit = append(s.audit, ev)
	return nil
}

func (s *fakeStore) Roots(context.Context) ([]store.Root, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	out := slices.Clone(s.roots)
	slices.SortStableFunc(out, func(a, b store.Root) int {
		return cmp.Or(a.AddedAt.Compare(b.AddedAt), cmp.Compare(a.Fingerprint, b.Fingerprint))
	})
	return out, nil
}

func (s *fakeStore) ClusterCredential(_ context.Context, cluster string) (store.ClusterCredential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return store.ClusterCredential{}, s.fail
	}
	c, ok := s.credentials[cluster]
	if !ok {
		return store.ClusterCredential{}, fmt.Errorf("cluster credential %s: %w", cluster, store.ErrNotFound)
	}
	return c, nil
}

func (s *fakeStore) SwapClusterCredential(_ context.Context, old, next store.ClusterCredential, ev store.AuditEvent) error {
	if err := store.ValidateSwapClusterCredential(old, next); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	cur, ok := s.credentials[next.Cluster]
	if ok != (old.Cluster != "") || ok && !cur.SameState(old) {
		return fmt.Errorf("cluster credential %s: %w", next.Cluster, store.ErrConflict)
	}
	next.UpdatedAt = sec(ev.Time)
	s.credentials[next.Cluster] = next
	s.audit = append(s.audit, ev)
	return nil
}

func (s *fakeStore) AppendAudit(_ context.Context, ev store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.audit = append(s.audit, ev)
	return nil
}

func (s *fakeStore) Revoke(_ context.Context, r store.Revocation, ev store.AuditEvent) (store.Revocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return store.Revocation{}, s.fail
	}
	if r.Kind == "" || r.Value == "" || r.RevokedBy == "" {
		return store.Revocation{}, fmt.Errorf("revocation %+v: missing kind, value or revoked by", r)
	}
	for i, x := range s.revocations {
		if x.Kind != r.Kind || x.Value != r.Value {
			continue
		}
		if !x.lifted {
			return store.Revocation{}, fmt.Errorf("revocation %s %s: %w", r.Kind, r.Value, store.ErrAlreadyExists)
		}
		s.revocations = slices.Delete(s.revocations, i, i+1)
		break
	}
	if r.RevokedAt.IsZero() {
		r.RevokedAt = ev.Time
	}
	s.lastRevID++
	r.ID, r.RevokedAt = s.lastRevID, sec(r.RevokedAt)
	if !r.ExpiresAt.IsZero() {
		r.ExpiresAt = sec(r.ExpiresAt)
	}
	s.revocations = append(s.revocations, fakeRevocation{Revocation: r})
	s.audit = append(s.audit, ev)
	return r, nil
}

func (s *fakeStore) Unrevoke(_ context.Context, kind, value string, ev store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for i, x := range s.revocations {
		if x.Kind == kind && x.Value == value && !x.lifted {
			s.revocations[i].lifted = true
			s.audit = append(s.audit, ev)
			return nil
		}
	}
	return fmt.Errorf("revocation %s %s: %w", kind, value, store.ErrNotFound)
}

func (s *fakeStore) Revocations(_ context.Context, now time.Time) ([]store.Revocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var out []store.Revocation
	for _, x := range s.revocations {
		if !x.lifted && (x.ExpiresAt.IsZero() || x.ExpiresAt.After(now)) {
			out = append(out, x.Revocation)
		}
	}
	slices.SortFunc(out, func(a, b store.Revocation) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (s *fakeStore) AuditEvents(_ context.Context, since time.Time) ([]store.AuditEvent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var out []store.AuditEvent
	for i, ev := range s.audit {
		if !ev.Time.Before(since) {
			ev.Seq = int64(i + 1)
			out = append(out, ev)
		}
	}
	return out, nil
}

func (s *fakeStore) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *fakeStore) events(action string) []store.AuditEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.AuditEvent
	for _, ev := range s.audit {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

func (s *fakeStore) allIntermediates() []store.Intermediate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.intermediates)
}

func (s *fakeStore) auditCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.audit)
}

func (s *fakeStore) intermediateCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.intermediates)
}

// fakeFederated is a Federated source whose domains the test sets.
type fakeFederated struct {
	mu      sync.Mutex
	domains []ca.DomainBundle
	changed chan struct{}
}

var _ Federated = (*fakeFederated)(nil)

func newFakeFederated() *fakeFederated { return &fakeFederated{changed: make(chan struct{})} }

func (f *fakeFederated) Domains() []ca.DomainBundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.domains)
}

func (f *fakeFederated) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeFederated) set(d ...ca.DomainBundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.domains = d
	close(f.changed)
	f.changed = make(chan struct{})
}

var errStoreDown = errors.New("store down")

// listingStore is a fakeStore with the optional ClusterLister capability.
type listingStore struct{ *fakeStore }

var _ ClusterLister = listingStore{}

func (s listingStore) Clusters(context.Context) ([]store.Cluster, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	var out []store.Cluster
	for _, c := range s.clusters {
		out = append(out, c)
	}
	return out, nil
}

// newFakeClock returns a clock standing at the current second.
func newFakeClock() *testkit.Clock { return testkit.NewClock(time.Now().Truncate(time.Second)) }
