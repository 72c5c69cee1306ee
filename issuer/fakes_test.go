package issuer_test

import (
	"context"
	"errors"
	"sync"

	"github.com/meshca/meshca/attest"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
)

// fakeAttestor accepts exactly the tokens in its map.
type fakeAttestor struct {
	identities map[string]attest.Identity
	err        error // returned for every unknown token when set
}

var _ issuer.Attestor = (*fakeAttestor)(nil)

func (f *fakeAttestor) Attest(_ context.Context, req attest.Request) (attest.Identity, error) {
	if id, ok := f.identities[req.Token]; ok {
		return id, nil
	}
	if f.err != nil {
		return attest.Identity{}, f.err
	}
	return attest.Identity{}, errors.Join(attest.ErrUnauthenticated, errors.New("unknown token"))
}

// fakeRecorder keeps records in memory, or fails every call when err is set.
type fakeRecorder struct {
	mu     sync.Mutex
	err    error
	certs  []store.Certificate
	events []store.AuditEvent
}

var _ issuer.Recorder = (*fakeRecorder)(nil)

func (f *fakeRecorder) RecordIssuance(_ context.Context, c store.Certificate, ev store.AuditEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.certs = append(f.certs, c)
	f.events = append(f.events, ev)
	return nil
}

func (f *fakeRecorder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.certs)
}

// bearerCreds sends a bearer token with every call, as agents do.
type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearerCreds) RequireTransportSecurity() bool { return true }
