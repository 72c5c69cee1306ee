package testkit

import (
	"net"
	"net/netip"
	"testing"
)

// FreeAddr returns "127.0.0.1:port" for a TCP port that was free a moment
// ago: the listener that found it is closed so that a process under test can
// take it. Another process may take it first; tests that can hand over a
// listener should use Listen instead.
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

// FindFreeAddr is FreeAddr for code that has no testing.TB (TestMain,
// servers shared by a whole package).
func FindFreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
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
