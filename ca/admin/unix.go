// Package admin is the plumbing the root and the issuers share for their
// admin APIs: the Unix admin socket, whose audit actor is the peer's Unix
// user; admin over mutual TLS for configured admin SPIFFE IDs holding
// certificates signed directly by a root; the names of callers; the
// store-backed read calls (Reads); and the mapping of admin errors to gRPC
// statuses (Status).
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// UnixConfig configures the admin Unix socket.
type UnixConfig struct {
	// Path of the socket. Required. Its directory is created with mode 0700
	// when missing (an existing one is left as it is).
	Path string
	// Mode is the socket file's mode; zero means 0600. The socket never
	// exists at Path with another mode.
	Mode os.FileMode
	// AllowUIDs and AllowGIDs are the users and primary groups whose
	// processes may connect besides the server's own user and root; nil
	// means none. A connection from anyone else is closed at once (checked
	// with SO_PEERCRED). Widen Mode (and the directory's) for them to reach
	// the socket at all.
	AllowUIDs, AllowGIDs []uint32
	// Logger receives one line per refused connection; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c.
func (c UnixConfig) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("admin socket: path is required")
	case c.Mode&^0o666 != 0:
		return fmt.Errorf("admin socket: mode %v: only read and write bits", c.Mode)
	}
	return nil
}

// ListenUnix listens on the admin socket at path with the defaults of
// UnixConfig: mode 0600, only the server's own user and root may connect.
func ListenUnix(path string) (net.Listener, error) {
	return UnixConfig{Path: path}.Listen()
}

// Listen listens on the admin socket. A socket file nobody serves (left by
// a crash) is replaced; a served one, or a file that is not a socket, is an
// error. The socket is bound inside a private (0700) temporary directory
// next to Path, given its mode, then renamed into place, so it is never
// reachable with a looser mode. Accept returns only connections from the
// allowed users; closing the listener removes the socket.
func (c UnixConfig) Listen() (net.Listener, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Mode == 0 {
		c.Mode = 0o600
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	dir := filepath.Dir(c.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := checkStaleSocket(c.Path); err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp(dir, ".admin-sock")
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	lis.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		lis.Close()
		return nil, fmt.Errorf("admin socket %s: %w", c.Path, err)
	}
	if err := os.Chmod(tmp, c.Mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, c.Path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(c.Path)
	if err != nil {
		return fail(err)
	}
	allowUIDs := append([]uint32{0, uint32(os.Geteuid())}, c.AllowUIDs...)
	return &unixListener{UnixListener: lis, cfg: c, uids: allowUIDs, file: fi}, nil
}

// checkStaleSocket returns nil when path does not exist or is a socket
// nobody listens on (it is then replaced by the rename).
func checkStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("admin socket: %w", err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("admin socket: %s exists and is not a socket", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("admin socket: another process is serving %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin socket: cannot tell whether %s is stale: %w", path, err)
	}
	return nil
}

// unixListener accepts connections from the allowed users only, and
// removes its socket file when closed, unless someone replaced it.
type unixListener struct {
	*net.UnixListener
	cfg  UnixConfig
	uids []uint32
	file os.FileInfo
	once sync.Once
}

// Accept returns the next connection from an allowed user; others are
// logged and closed.
func (l *unixListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		cred, err := peerCred(conn)
		switch {
		case errors.Is(err, errPeerCredUnsupported):
			return conn, nil
		case err != nil:
			l.cfg.Logger.Warn("admin socket connection refused", "reason", err.Error())
		case slices.Contains(l.uids, cred.uid) || slices.Contains(l.cfg.AllowGIDs, cred.gid):
			return conn, nil
		default:
			l.cfg.Logger.Warn("admin socket connection refused", "reason", "user not allowed",
				"uid", cred.uid, "gid", cred.gid, "pid", cred.pid)
		}
		conn.Close()
	}
}

// Close stops listening and removes the socket file.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, statErr := os.Lstat(l.cfg.Path); statErr == nil && os.SameFile(fi, l.file) {
			if rmErr := os.Remove(l.cfg.Path); rmErr != nil && err == nil {
				err = fmt.Errorf("remove admin socket %s: %w", l.cfg.Path, rmErr)
			}
		}
	})
	return err
}

// unixCred is who is on the other end of a Unix socket.
type unixCred struct {
	uid, gid uint32
	pid      int32
}

// errPeerCredUnsupported: this platform cannot tell who connected; the
// socket's mode alone guards it.
var errPeerCredUnsupported = errors.New("peer credentials are not supported on this platform")

// UnixCredentials are the gRPC server transport credentials of an admin
// socket: no encryption (the socket's permissions and the listener's user
// check guard it), and the peer's Unix user as the AuthInfo, for Actor.
func UnixCredentials() credentials.TransportCredentials { return peerCredentials{} }

// peerCredInfo is the AuthInfo of an admin connection: who is on the other
// end.
type peerCredInfo struct {
	actor string
}

// AuthType implements credentials.AuthInfo.
func (peerCredInfo) AuthType() string { return "unix-peercred" }

// Actor names the caller of an admin call for the audit log: "admin:<user>"
// on the Unix socket, "spiffe:<SPIFFE ID>" over mutual TLS (see MTLS),
// "admin:unknown" when it cannot tell.
func Actor(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		switch info := p.AuthInfo.(type) {
		case peerCredInfo:
			if info.actor != "" {
				return info.actor
			}
		case svidInfo:
			return "spiffe:" + info.id.String()
		}
	}
	return "admin:unknown"
}

// OnUnixSocket reports whether the call of ctx came over the Unix admin
// socket (rather than mutual TLS).
func OnUnixSocket(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	_, ok = p.AuthInfo.(peerCredInfo)
	return ok
}

// peerCredentials are the transport credentials of the admin socket: no
// encryption, and the peer's Unix user, read once per connection, as the
// AuthInfo.
type peerCredentials struct{}

var _ credentials.TransportCredentials = peerCredentials{}

// ServerHandshake implements credentials.TransportCredentials.
func (peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, peerCredInfo{actor: unixPeerActor(conn)}, nil
}

// ClientHandshake implements credentials.TransportCredentials; admin
// clients dial with insecure credentials instead.
func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peer credentials are server-side only")
}

// Info implements credentials.TransportCredentials.
func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}

// Clone implements credentials.TransportCredentials.
func (c peerCredentials) Clone() credentials.TransportCredentials { return c }

// OverrideServerName is required by the (deprecated) interface method.
func (peerCredentials) OverrideServerName(string) error { return nil }
