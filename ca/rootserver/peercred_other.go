//go:build !linux

package rootserver

import "net"

// unixPeerActor cannot read peer credentials on this platform.
func unixPeerActor(net.Conn) string { return "admin:unknown" }
