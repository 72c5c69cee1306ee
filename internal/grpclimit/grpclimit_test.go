package grpclimit_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/testkit"
)

func mustLimits(t *testing.T, cfg grpclimit.Config) *grpclimit.Limits {
	t.Helper()
	l, err := grpclimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestListenerRefusesConnectionsPastTheCaps(t *testing.T) {
	l := mustLimits(t, grpclimit.Config{MaxConnections: 3, MaxConnectionsPerPeer: 2})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := l.Listener(raw)
	defer lis.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := raw.Addr().String()
	expectAccepted := func(name string) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not accepted", name)
			return nil
		}
	}
	expectRefused := func(name string, c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: read = %v, want EOF (closed by the server)", name, err)
		}
	}
	dialFrom(t, "127.0.0.1", addr)
	first := expectAccepted("first from 127.0.0.1")
	dialFrom(t, "127.0.0.1", addr)
	expectAccepted("second from 127.0.0.1")
	expectRefused("third from 127.0.0.1 (per-peer cap)", dialFrom(t, "127.0.0.1", addr))
	dialFrom(t, "127.0.0.2", addr)
	expectAccepted("first from 127.0.0.2")
	expectRefused("first from 127.0.0.3 (global cap)", dialFrom(t, "127.0.0.3", addr))

	first.Close() // its slot is given back
	dialFrom(t, "127.0.0.3", addr)
	expectAccepted("127.0.0.3 after a close")
}

func peerContext(ip string) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 4000}})
}

func TestAcquireWatchCapsAndReleases(t *testing.T) {
	l := mustLimits(t, grpclimit.Config{MaxWatches: 3, MaxWatchesPerPeer: 2})
	a := peerContext("10.0.0.1")
	var releases []func()
	for range 2 {
		r, err := l.AcquireWatch(a)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	if _, err := l.AcquireWatch(a); !errors.Is(err, grpclimit.ErrLimit) {
		t.Fatalf("third watch of one peer: %v, want ErrLimit", err)
	}
	r, err := l.AcquireWatch(peerContext("10.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AcquireWatch(peerContext("10.0.0.3")); !errors.Is(err, grpclimit.ErrLimit) {
		t.Fatalf("fourth watch: %v, want ErrLimit", err)
	}
	r()
	r() // a second release changes nothing
	releases[0]()
	for _, ip := range []string{"10.0.0.1", "10.0.0.3"} {
		if _, err := l.AcquireWatch(peerContext(ip)); err != nil {
			t.Fatalf("watch of %s after releases: %v", ip, err)
		}
	}
	if _, err := l.AcquireWatch(peerContext("10.0.0.4")); !errors.Is(err, grpclimit.ErrLimit) {
		t.Fatalf("watch past the cap after releases: %v, want ErrLimit (a double release must not free a slot)", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]grpclimit.Config{
		"negative connections":   {MaxConnections: -1},
		"negative watches/peer":  {MaxWatchesPerPeer: -1},
		"negative idle":          {MaxConnectionIdle: -time.Second},
		"negative handshake":     {HandshakeTimeout: -time.Second},
		"negative ping interval": {MinPingInterval: -time.Second},
		"negative request time":  {RequestTimeout: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := grpclimit.New(cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	if err := (grpclimit.Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &grpclimit.Config{})
}
