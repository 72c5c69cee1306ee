package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// PeerPolicy says which local processes may use one of the agent's Unix
// sockets, beyond what the socket's file mode allows. The zero value checks
// nothing: any process that can open the socket is served.
type PeerPolicy struct {
	// UIDs and GIDs, when either is set, are the user and group IDs served:
	// the kernel's record of the connecting process (SO_PEERCRED: its
	// effective uid and gid when it connected; supplementary groups are not
	// seen) must have its uid in UIDs or its gid in GIDs. Other connections
	// are closed as soon as they are accepted, before any request is read,
	// and logged. Linux only.
	UIDs, GIDs []int
}

func (p PeerPolicy) enabled() bool { return len(p.UIDs) > 0 || len(p.GIDs) > 0 }

func (p PeerPolicy) allows(c peerCred) bool {
	return slices.Contains(p.UIDs, c.uid) || slices.Contains(p.GIDs, c.gid)
}

func (p PeerPolicy) validate() error {
	if !p.enabled() {
		return nil
	}
	if !peerCredSupported {
		return errors.New("checking the uid and gid of a connecting process is supported on Linux only")
	}
	for _, id := range append(slices.Clone(p.UIDs), p.GIDs...) {
		if id < 0 {
			return fmt.Errorf("uid or gid %d is negative", id)
		}
	}
	return nil
}

// peerCred is what the kernel recorded of the process that connected.
type peerCred struct{ pid, uid, gid int }

// guardedListener accepts, from a Unix listener, only the connections its
// policy allows and no more than maxConns at a time; it closes the others at
// once, so that their clients fail fast rather than queue, and logs them.
// The clients learn nothing but a closed connection.
type guardedListener struct {
	net.Listener
	name     string
	policy   PeerPolicy
	maxConns int64
	log      *slog.Logger

	open atomic.Int64
	// full is set while connections are refused for the cap, so that a
	// flood logs once, not once per connection.
	full atomic.Bool
}

func newGuardedListener(lis net.Listener, name string, policy PeerPolicy, maxConns int, log *slog.Logger) *guardedListener {
	return &guardedListener{Listener: lis, name: name, policy: policy, maxConns: int64(maxConns), log: log}
}

// Accept returns the next allowed connection; it returns an error only when
// the underlying listener does.
func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.policy.enabled() {
			cred, err := peerCredentials(c)
			if err != nil {
				_ = c.Close() // refused; nothing to report to the peer
				l.log.Warn("connection refused: cannot read the peer's credentials", "socket", l.name, "error", err.Error())
				continue
			}
			if !l.policy.allows(cred) {
				_ = c.Close() // refused
				l.log.Warn("connection refused: peer uid and gid not allowed", "socket", l.name,
					"peer_uid", cred.uid, "peer_gid", cred.gid, "peer_pid", cred.pid)
				continue
			}
		}
		if l.open.Add(1) > l.maxConns {
			l.open.Add(-1)
			_ = c.Close() // refused
			if l.full.CompareAndSwap(false, true) {
				l.log.Warn("connection limit reached; refusing new connections", "socket", l.name, "max_connections", l.maxConns)
			}
			continue
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// countedConn gives its slot back when closed (once, however often Close
// is called).
type countedConn struct {
	net.Conn
	l    *guardedListener
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.l.open.Add(-1) < c.l.maxConns && c.l.full.CompareAndSwap(true, false) {
			c.l.log.Log(context.Background(), slog.LevelInfo, "accepting connections again", "socket", c.l.name)
		}
	})
	return err
}
