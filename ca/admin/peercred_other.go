//go:build !linux

package admin

import "net"

// peerCred cannot read peer credentials on this platform: the socket's
// mode alone guards it.
func peerCred(net.Conn) (unixCred, error) { return unixCred{}, errPeerCredUnsupported }

// unixPeerActor cannot read peer credentials on this platform.
func unixPeerActor(net.Conn) string { return "admin:unknown" }
