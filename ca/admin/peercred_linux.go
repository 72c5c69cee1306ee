package admin

import (
	"fmt"
	"net"
	"os/user"
	"strconv"
	"syscall"
)

// peerCred reads who is on the other end of conn (SO_PEERCRED: the
// credentials at connect time).
func peerCred(conn net.Conn) (unixCred, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return unixCred{}, fmt.Errorf("peer credentials: %T is not a Unix socket", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return unixCred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return unixCred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return unixCred{}, fmt.Errorf("peer credentials: %w", credErr)
	}
	return unixCred{uid: cred.Uid, gid: cred.Gid, pid: cred.Pid}, nil
}

// unixPeerActor names the Unix user on the other end of conn, from
// SO_PEERCRED: "admin:<user name>", "admin:uid:<n>" when the name is
// unknown, "admin:unknown" when conn is not a Unix socket.
func unixPeerActor(conn net.Conn) string {
	cred, err := peerCred(conn)
	if err != nil {
		return "admin:unknown"
	}
	uid := strconv.FormatUint(uint64(cred.uid), 10)
	if u, err := user.LookupId(uid); err == nil && u.Username != "" {
		return "admin:" + u.Username
	}
	return "admin:uid:" + uid
}
