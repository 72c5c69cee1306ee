package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

// fakeFetcher issues certificates from a testkit tree at time.Now() (fake
// time inside a synctest bubble), or fails with err while it is set.
type fakeFetcher struct {
	tree *testkit.Tree
	id   spiffeid.ID
	// ttl applies when Fetch is asked for 0.
	ttl time.Duration

	mu     sync.Mutex
	err    error
	extra  *x509.Certificate // a root returned at the end of every response, if set
	roots  *trust.Bundle     // last SetRoots
	tokens []string          // tokens of every Fetch
	keys   []crypto.Signer
	crls   [][]byte // last SetCRLs
}

var (
	_ fetcher   = (*fakeFetcher)(nil)
	_ crlSetter = (*fakeFetcher)(nil)
)

func (f *fakeFetcher) SetCRLs(ders [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crls = ders
	return nil
}

func (f *fakeFetcher) Fetch(_ context.Context, key crypto.Signer, token string, ttl time.Duration) (*SVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, token)
	f.keys = append(f.keys, key)
	if f.err != nil {
		return nil, f.err
	}
	if ttl == 0 {
		ttl = f.ttl
	}
	leaf, err := f.tree.Intermediate.SignLeaf(ca.LeafRequest{
		PublicKey: key.Public(), URIs: []*url.URL{f.id.URL()}, TTL: ttl, Now: time.Now(),
	})
	if err != nil {
		return nil, err
	}
	roots := f.tree.Bundle.Roots()
	if f.extra != nil {
		roots = append(roots, f.extra)
	}
	chain := append([]*x509.Certificate{leaf, f.tree.Intermediate.Certificate}, f.tree.Intermediate.Chain...)
	return &SVID{Chain: chain, Key: key, Roots: roots}, nil
}

func (f *fakeFetcher) SetRoots(b *trust.Bundle) error {
	if b == nil {
		return errors.New("nil roots")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roots = b
	return nil
}

func (f *fakeFetcher) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeFetcher) setExtraRoot(c *x509.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.extra = c
}

func (f *fakeFetcher) calls() (tokens []string, keys []crypto.Signer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...), append([]crypto.Signer(nil), f.keys...)
}

func (f *fakeFetcher) lastRoots() *trust.Bundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.roots
}
