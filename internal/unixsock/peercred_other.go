//go:build !linux

package unixsock

import "net"

// PeerCredSupported reports whether PeerCred works on this platform.
const PeerCredSupported = false

// PeerCred cannot read peer credentials on this platform: it returns
// ErrPeerCredUnsupported.
func PeerCred(net.Conn) (Cred, error) { return Cred{}, ErrPeerCredUnsupported }
