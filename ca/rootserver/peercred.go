package rootserver

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

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
