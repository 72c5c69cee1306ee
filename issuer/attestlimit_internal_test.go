package issuer

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
)

func fromIP(i int) context.Context {
	ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: ip, Port: 40000}})
}

// TestAttestLimiterStaysBounded fails once from more addresses than it
// remembers: those whose allowance has refilled are forgotten, and an
// address that spent its allowance is still refused until it refills.
func TestAttestLimiterStaysBounded(t *testing.T) {
	l := newAttestLimiter()
	now := time.Unix(1_800_000_000, 0)
	for range failedAttestBurst {
		l.failed(fromIP(0), now)
	}
	if l.allowed(fromIP(0), now) {
		t.Fatal("an address past its allowance is allowed")
	}
	later := now.Add(failedAttestBurst * failedAttestEvery)
	for i := 1; i <= failedAttestPeers+10; i++ {
		l.failed(fromIP(i), later)
	}
	if l.n > failedAttestPeers {
		t.Fatalf("%d addresses remembered, want at most %d", l.n, failedAttestPeers)
	}
	if !l.allowed(fromIP(0), later) {
		t.Error("an address whose allowance refilled is still refused")
	}
	if !l.allowed(fromIP(1<<20), later) {
		t.Error("an address that never failed is refused")
	}
}
