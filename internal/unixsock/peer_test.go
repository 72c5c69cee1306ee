//go:build linux

package unixsock

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPeerCred(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	lis, err := Listen(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	cred, err := PeerCred(server)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Cred{PID: os.Getpid(), UID: os.Geteuid(), GID: os.Getegid()}); cred != want {
		t.Errorf("PeerCred = %+v, want %+v", cred, want)
	}
	if _, err := PeerCred(fakeConn{}); err == nil {
		t.Error("PeerCred of a connection that is not a Unix socket: no error")
	}
}

type fakeConn struct{ net.Conn }

// TestPeerPolicy dials a socket whose policy does or does not name the
// test's own uid or gid: a peer not named gets its connection closed
// before anything is served, and the refusal is logged.
func TestPeerPolicy(t *testing.T) {
	me, myGroup := os.Geteuid(), os.Getegid()
	for _, tc := range []struct {
		name   string
		policy PeerPolicy
		served bool
	}{
		{"no policy", PeerPolicy{}, true},
		{"uid allowed", PeerPolicy{UIDs: []int{me + 1, me}}, true},
		{"gid allowed", PeerPolicy{UIDs: []int{me + 1}, GIDs: []int{myGroup}}, true},
		{"neither allowed", PeerPolicy{UIDs: []int{me + 1}, GIDs: []int{myGroup + 1}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			path := filepath.Join(t.TempDir(), "s.sock")
			lis, err := Listen(Config{Path: path, Peers: tc.policy, Name: "test", Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("served\n"))
					c.Close()
				}
			}()
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			c.Close()
			lis.Close()
			<-done
			if err != nil {
				t.Fatal(err)
			}
			if served := string(got) == "served\n"; served != tc.served {
				t.Fatalf("got %q, want served: %v", got, tc.served)
			}
			refused := strings.Contains(logs.String(), `"msg":"connection refused: peer uid and gid not allowed","socket":"test","peer_uid":`)
			if refused == tc.served {
				t.Errorf("logs %q; want a refusal logged: %v", logs.String(), !tc.served)
			}
		})
	}
}
