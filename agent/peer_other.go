//go:build !linux

package agent

import (
	"errors"
	"net"
)

const peerCredSupported = false

func peerCredentials(net.Conn) (peerCred, error) {
	return peerCred{}, errors.New("peer credentials are supported on Linux only")
}
