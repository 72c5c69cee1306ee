package ops

import (
	"net"
	"testing"
)

// TestListenTCPReusePort: with reusePort two listeners share one address
// (replicas on one host network); without it the second is refused.
func TestListenTCPReusePort(t *testing.T) {
	first, err := ListenTCP("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	addr := first.Addr().String()
	second, err := ListenTCP(addr, true)
	if err != nil {
		t.Fatalf("second listener on %s with SO_REUSEPORT: %v", addr, err)
	}
	defer second.Close()
	// Both accept: connections reach one of the two.
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if l, err := ListenTCP(addr, false); err == nil {
		l.Close()
		t.Fatalf("listener on %s without SO_REUSEPORT succeeded beside two others", addr)
	}
}
