package agent

import "github.com/meshca/meshca/internal/unixsock"

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

// policy is p as the socket listener enforces it.
func (p PeerPolicy) policy() unixsock.PeerPolicy { return unixsock.PeerPolicy(p) }

func (p PeerPolicy) validate() error { return p.policy().Validate() }
