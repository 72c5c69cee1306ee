package issuer

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"
)

// Every request's token goes to the attestor, and a token that fails is
// not cached: with TokenReview, each is a call to the API server, under a
// client rate limit all requests share. A caller sending junk tokens as
// fast as it can would take that limit from every workload. So each caller
// address may fail attestation failedAttestBurst times at once and then
// about once per failedAttestEvery; past that, its requests are refused
// (Unauthenticated, like the failure itself) without reaching the
// attestor until its allowance refills. Workloads whose tokens are valid
// never spend it; an agent with a bad token retries with backoff, far
// slower than the refill.
const (
	failedAttestBurst = 30
	failedAttestEvery = time.Second
	// failedAttestPeers bounds the addresses remembered; past it, those
	// whose allowance is full again are forgotten.
	failedAttestPeers = 16384
)

// errAttestLimited is the reason of a request refused by the allowance.
var errAttestLimited = errors.New("failed attestation too often; refused without attesting")

// attestLimiter is the per-address allowance of failed attestations.
type attestLimiter struct {
	mu    sync.Mutex
	peers map[string]*rate.Limiter
}

func newAttestLimiter() *attestLimiter {
	return &attestLimiter{peers: map[string]*rate.Limiter{}}
}

// allowed reports whether the caller of ctx may have its token attested
// at now: it has failed attestation less than its allowance.
func (l *attestLimiter) allowed(ctx context.Context, now time.Time) bool {
	key, ok := callerIP(ctx)
	if !ok {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.peers[key]
	return lim == nil || lim.TokensAt(now) >= 1
}

// failed spends one of the allowance of the caller of ctx at now.
func (l *attestLimiter) failed(ctx context.Context, now time.Time) {
	key, ok := callerIP(ctx)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.peers[key]
	if lim == nil {
		if len(l.peers) >= failedAttestPeers {
			l.forgetRefilled(now)
		}
		lim = rate.NewLimiter(rate.Every(failedAttestEvery), failedAttestBurst)
		l.peers[key] = lim
	}
	lim.AllowN(now, 1)
}

// forgetRefilled drops the addresses whose allowance is full at now:
// remembering them changes nothing. If every address is still limited, all
// are forgotten rather than memory growing without bound.
func (l *attestLimiter) forgetRefilled(now time.Time) {
	for k, lim := range l.peers {
		if lim.TokensAt(now) >= failedAttestBurst {
			delete(l.peers, k)
		}
	}
	if len(l.peers) >= failedAttestPeers {
		clear(l.peers)
	}
}

// callerIP is the IP address of the gRPC caller of ctx; false for a call
// that did not come over the network (a test, an in-process caller).
func callerIP(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", false
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.IP.String(), true
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return "", false
	}
	return host, true
}
