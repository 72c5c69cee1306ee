// Package unixsock listens on Unix sockets safely and reads who connected
// to them.
//
// Listen binds a socket inside a private (0700) temporary directory next
// to its path, gives it its mode and group, and only then renames it into
// place, so the socket never exists at its path with a looser mode or
// another group than asked. It replaces a socket file nobody serves (left
// by a crash), refuses a served one or a file that is not a socket, and
// removes the socket when the listener is closed, unless someone replaced
// it meanwhile.
//
// A PeerPolicy further restricts a socket to processes of given users or
// primary groups, as the kernel recorded them when they connected
// (SO_PEERCRED, Linux only; see PeerCred): Accept closes other connections
// before anything is read from them and logs each refusal.
//
// The package imports only the standard library, so that the small
// binaries using it stay small.
package unixsock
