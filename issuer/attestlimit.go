package issuer

import (
	"context"
	"errors"
	"net"
	"net/netip"
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
// Every request looks its caller up (allowed), so that read takes no lock
// and allocates nothing; only a failure (failed) locks.
type attestLimiter struct {
	peers sync.Map // netip.Addr → *rate.Limiter
	mu    sync.Mutex
	n     int // entries in peers, under mu
}

func newAttestLimiter() *attestLimiter { return &attestLimiter{} }

// allowed reports whether the caller of ctx may have its token attested
// at now: it has failed attestation less than its allowance.
func (l *attestLimiter) allowed(ctx context.Context, now time.Time) bool {
	key, ok := callerIP(ctx)
	if !ok {
		return true
	}
	v, ok := l.peers.Load(key)
	return !ok || v.(*rate.Limiter).TokensAt(now) >= 1
}

// failed spends one of the allowance of the caller of ctx at now.
func (l *attestLimiter) failed(ctx context.Context, now time.Time) {
	key, ok := callerIP(ctx)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.peers.Load(key)
	if !ok {
		if l.n >= failedAttestPeers {
			l.forgetRefilled(now)
		}
		v = rate.NewLimiter(rate.Every(failedAttestEvery), failedAttestBurst)
		l.peers.Store(key, v)
		l.n++
	}
	v.(*rate.Limiter).AllowN(now, 1)
}

// forgetRefilled drops the addresses whose allowance is full at now:
// remembering them changes nothing. If every address is still limited, all
// are forgotten rather than memory growing without bound. The caller holds
// mu.
func (l *attestLimiter) forgetRefilled(now time.Time) {
	l.peers.Range(func(k, v any) bool {
		if v.(*rate.Limiter).TokensAt(now) >= failedAttestBurst {
			l.peers.Delete(k)
			l.n--
		}
		return true
	})
	if l.n >= failedAttestPeers {
		l.peers.Clear()
		l.n = 0
	}
}

// callerIP is the IP address of the gRPC caller of ctx; false for a call
// that did not come over the network (a test, an in-process caller).
func callerIP(ctx context.Context) (netip.Addr, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}, false
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.AddrPort().Addr().Unmap(), true
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}
