package unixsock

import (
	"errors"
	"fmt"
	"slices"
)

// PeerPolicy says which local processes may use a socket, beyond what the
// socket's file mode allows. The zero value checks nothing: any process
// that can open the socket is served.
type PeerPolicy struct {
	// UIDs and GIDs, when either is set, are the user and group IDs served:
	// the kernel's record of the connecting process (its effective uid and
	// gid when it connected; supplementary groups are not seen) must have
	// its uid in UIDs or its gid in GIDs. Other connections are closed as
	// soon as they are accepted, before anything is read, and logged.
	// Supported where PeerCredSupported.
	UIDs, GIDs []int
}

// Enabled reports whether p checks anything.
func (p PeerPolicy) Enabled() bool { return len(p.UIDs) > 0 || len(p.GIDs) > 0 }

// allows reports whether p serves the process c describes.
func (p PeerPolicy) allows(c Cred) bool {
	return slices.Contains(p.UIDs, c.UID) || slices.Contains(p.GIDs, c.GID)
}

// Validate reports the first problem with p: a negative ID, or a check
// this platform cannot make.
func (p PeerPolicy) Validate() error {
	if !p.Enabled() {
		return nil
	}
	if !PeerCredSupported {
		return errors.New("checking the uid and gid of a connecting process is supported on Linux only")
	}
	for _, id := range append(slices.Clone(p.UIDs), p.GIDs...) {
		if id < 0 {
			return fmt.Errorf("uid or gid %d is negative", id)
		}
	}
	return nil
}

// Cred is what the kernel recorded of the process on the other end of a
// Unix socket when it connected.
type Cred struct{ PID, UID, GID int }

// ErrPeerCredUnsupported is PeerCred's error on platforms that cannot tell
// who connected.
var ErrPeerCredUnsupported = errors.New("peer credentials are supported on Linux only")
