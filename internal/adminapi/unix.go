package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/meshca/meshca/internal/unixsock"
)

// UnixConfig configures the admin Unix socket.
type UnixConfig struct {
	// Path of the socket, at most 103 bytes (the longest every platform
	// accepts). Required. Its directory is created with mode 0700 when
	// missing (an existing one is left as it is).
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
// reachable with a looser mode. Accept returns only
// connections from the allowed users (where the platform can tell who
// connected; elsewhere the socket's mode alone guards it); closing the
// listener removes the socket.
func (c UnixConfig) Listen() (net.Listener, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	sc := unixsock.Config{Path: c.Path, Mode: c.Mode, Name: "admin", Logger: c.Logger}
	if sc.Mode == 0 {
		sc.Mode = 0o600
	}
	if unixsock.PeerCredSupported {
		sc.Peers.UIDs = []int{0, os.Geteuid()}
		for _, uid := range c.AllowUIDs {
			sc.Peers.UIDs = append(sc.Peers.UIDs, int(uid))
		}
		for _, gid := range c.AllowGIDs {
			sc.Peers.GIDs = append(sc.Peers.GIDs, int(gid))
		}
	}
	lis, err := unixsock.Listen(sc)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return lis, nil
}

// unixPeerActor names the Unix user on the other end of conn, from its
// peer credentials: "admin:<user name>", "admin:uid:<n>" when the name is
// unknown, "admin:unknown" when it cannot tell.
func unixPeerActor(conn net.Conn) string {
	cred, err := unixsock.PeerCred(conn)
	if err != nil {
		return "admin:unknown"
	}
	uid := strconv.Itoa(cred.UID)
	if u, err := user.LookupId(uid); err == nil && u.Username != "" {
		return "admin:" + u.Username
	}
	return "admin:uid:" + uid
}

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
