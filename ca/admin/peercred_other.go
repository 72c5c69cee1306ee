//go:build !linux

package admin

import "net"

// unixPeerActor cannot read peer credentials on this platform.
func unixPeerActor(net.Conn) string { return "admin:unknown" }
