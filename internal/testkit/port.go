package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreeAddr returns "127.0.0.1:port" for a TCP port that was free a moment
// ago: the listener that found it is closed so that a process under test can
// take it. Another process may take it first; tests that can hand over a
// listener should use Listen instead. See FindFreeAddr for how the port is
// chosen to make that unlikely.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := FindFreeAddr()
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	return addr
}

// FreePort is FreeAddr's port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	return int(netip.MustParseAddrPort(FreeAddr(tb)).Port())
}

// FreePorts is FreePort n times: n distinct ports.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		addr, err := FindFreeAddr()
		if err != nil {
			return nil, err
		}
		ports = append(ports, int(netip.MustParseAddrPort(addr).Port()))
	}
	return ports, nil
}

// FindFreeAddr is FreeAddr for code that has no testing.TB (TestMain,
// servers shared by a whole package).
//
// The port is drawn at random from outside the kernel's ephemeral range
// (net.ipv4.ip_local_port_range). Between the moment it is found and the
// moment the process under test binds it, a port from inside that range
// can be taken by anything on the machine: every listener on port 0 and
// every outgoing connection of the other test packages running at the
// same time draws from it. Outside it, only another FindFreeAddr caller
// can, and one process never hands out the same port twice.
func FindFreeAddr() (string, error) {
	return findFreeIn(pickRange())
}

// findFreeIn picks a free port of [lo, hi) that this process has not
// handed out before.
func findFreeIn(lo, hi int) (string, error) {
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		if !handOut(port) {
			continue
		}
		// Bound on all addresses, so that a listener on any of them
		// makes the port count as taken.
		l, err := net.Listen("tcp4", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			return "", err
		}
		return "127.0.0.1:" + strconv.Itoa(port), nil
	}
	return "", fmt.Errorf("no free TCP port in [%d, %d) after 200 tries", lo, hi)
}

// Ports below lowestPort are left alone: the test bed's services and
// well-known servers (PostgreSQL, Vault, the kubelet) listen there.
const lowestPort = 20000

var (
	portsMu      sync.Mutex
	portsHandout = map[int]bool{}
)

// handOut records port as handed out by this process and reports whether
// it was not already.
func handOut(port int) bool {
	portsMu.Lock()
	defer portsMu.Unlock()
	if portsHandout[port] {
		return false
	}
	portsHandout[port] = true
	return true
}

// pickRange is the larger of the two port ranges above lowestPort that lie
// below and above the ephemeral range; the whole of [lowestPort, 65536)
// when the range cannot be read.
func pickRange() (lo, hi int) {
	elo, ehi, ok := ephemeralRange()
	if !ok {
		return lowestPort, 65536
	}
	return largerGap(elo, ehi)
}

// largerGap is the larger of [lowestPort, elo) and (ehi, 65535]; if both
// are short, the whole of [lowestPort, 65536): a port there is no worse
// than one the kernel would pick.
func largerGap(elo, ehi int) (lo, hi int) {
	below, above := elo-lowestPort, 65535-ehi
	switch {
	case below < 1000 && above < 1000:
		return lowestPort, 65536
	case below >= above:
		return lowestPort, elo
	default:
		return ehi + 1, 65536
	}
}

// ephemeralRange reads net.ipv4.ip_local_port_range.
func ephemeralRange() (lo, hi int, ok bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}

// Listen opens a TCP listener on a free port of 127.0.0.1 and closes it at
// the end of the test (closing it again is harmless).
func Listen(tb testing.TB) net.Listener {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	tb.Cleanup(func() { _ = lis.Close() })
	return lis
}
