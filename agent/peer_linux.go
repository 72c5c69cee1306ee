package agent

import (
	"fmt"
	"net"
	"syscall"
)

const peerCredSupported = true

// peerCredentials reads SO_PEERCRED of a Unix socket connection.
func peerCredentials(c net.Conn) (peerCred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peerCred{}, fmt.Errorf("%T is not a Unix socket connection", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var (
		cred    *syscall.Ucred
		credErr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return peerCred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return peerCred{}, fmt.Errorf("peer credentials: %w", credErr)
	}
	return peerCred{pid: int(cred.Pid), uid: int(cred.Uid), gid: int(cred.Gid)}, nil
}
