// Package admin is the plumbing the root and the issuers share for their
// admin APIs: the Unix admin socket, whose audit actor is the peer's Unix
// user; admin over mutual TLS for configured admin SPIFFE IDs; the names of
// callers; the store-backed read calls (Reads); and the mapping of admin
// errors to gRPC statuses (Status).
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ListenUnix listens on a Unix socket at path for an admin server: the
// parent directory is created with mode 0700 (an existing one is left as it
// is), a stale socket is removed, and the socket gets mode 0600.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("admin socket: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket: remove stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return lis, nil
}

// UnixCredentials are the gRPC server transport credentials of an admin
// socket: no encryption (the socket's permissions guard it), and the peer's
// Unix user as the AuthInfo, for Actor.
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

// peerCredentials are the transport credentials of the admin socket: no
// encryption (the socket's permissions guard it), and the peer's Unix user,
// read once per connection, as the AuthInfo.
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
