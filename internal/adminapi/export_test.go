package adminapi

import "google.golang.org/grpc/credentials"

// PeerCredInfo is the AuthInfo of a Unix socket peer named actor, for
// tests outside the package.
func PeerCredInfo(actor string) credentials.AuthInfo { return peerCredInfo{actor: actor} }
