package testkit

import (
	"net"
	"net/netip"
	"testing"
)

// TestFreeAddrOutsideEphemeralRange checks that handed-out ports are
// distinct, bindable and outside the range the kernel hands to port-0
// listeners and outgoing connections.
func TestFreeAddrOutsideEphemeralRange(t *testing.T) {
	elo, ehi, ok := ephemeralRange()
	if !ok {
		t.Fatal("cannot read net.ipv4.ip_local_port_range")
	}
	seen := map[uint16]bool{}
	for range 50 {
		addr := FreeAddr(t)
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			t.Fatalf("FreeAddr() = %q: %v", addr, err)
		}
		p := int(ap.Port())
		if p < lowestPort {
			t.Errorf("port %d below %d", p, lowestPort)
		}
		if lo, hi := largerGap(elo, ehi); lo != lowestPort || hi != 65536 {
			if p >= elo && p <= ehi {
				t.Errorf("port %d inside the ephemeral range [%d, %d]", p, elo, ehi)
			}
		}
		if seen[ap.Port()] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[ap.Port()] = true
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on FreeAddr()'s %s: %v", addr, err)
		}
		l.Close()
	}
}

// TestLargerGap checks the choice between the ranges below and above the
// ephemeral one.
func TestLargerGap(t *testing.T) {
	for _, c := range []struct{ elo, ehi, lo, hi int }{
		{32768, 60999, lowestPort, 32768}, // Linux's default: below is larger
		{20500, 40000, 40001, 65536},      // above is larger
		{1024, 65535, lowestPort, 65536},  // no room either side
		{20000, 64999, lowestPort, 65536}, // both gaps under 1000 ports
		{49152, 65535, lowestPort, 49152}, // the IANA dynamic range
	} {
		if lo, hi := largerGap(c.elo, c.ehi); lo != c.lo || hi != c.hi {
			t.Errorf("largerGap(%d, %d) = [%d, %d), want [%d, %d)", c.elo, c.ehi, lo, hi, c.lo, c.hi)
		}
	}
}

// TestFindFreeInPassesOverTaken checks that neither a port some listener
// holds nor one handed out before is handed out.
func TestFindFreeInPassesOverTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := l.Addr().(*net.TCPAddr).Port
	if addr, err := findFreeIn(held, held+1); err == nil {
		t.Fatalf("findFreeIn of a held port = %s, want an error", addr)
	}
	free := Listen(t)
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	addr, err := findFreeIn(port, port+1)
	if err != nil {
		t.Fatalf("findFreeIn of a free port: %v", err)
	}
	if want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String(); addr != want {
		t.Errorf("findFreeIn = %s, want %s", addr, want)
	}
	if addr, err := findFreeIn(port, port+1); err == nil {
		t.Errorf("findFreeIn handed %s out twice", addr)
	}
}
