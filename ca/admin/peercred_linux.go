package admin

import (
	"net"
	"os/user"
	"strconv"
	"syscall"
)

// unixPeerActor names the Unix user on the other end of conn, from
// SO_PEERCRED: "admin:<user name>", "admin:uid:<n>" when the name is
// unknown, "admin:unknown" when conn is not a Unix socket.
func unixPeerActor(conn net.Conn) string {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return "admin:unknown"
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "admin:unknown"
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return "admin:unknown"
	}
	uid := strconv.FormatUint(uint64(cred.Uid), 10)
	if u, err := user.LookupId(uid); err == nil && u.Username != "" {
		return "admin:" + u.Username
	}
	return "admin:uid:" + uid
}
