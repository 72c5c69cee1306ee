package main

import (
	"time"

	"github.com/meshca/meshca/internal/grpclimit"
)

// limitsConfig is `limits:` of the issuer and root configs: what the gRPC
// listener holds for its peers (package grpclimit). A peer is an IP
// address; clients behind one NAT or TCP gateway share its per-peer caps.
// Zero or absent fields take the defaults given; negative ones are errors.
type limitsConfig struct {
	// MaxConnections open at once; more are closed on accept. Default 16384.
	MaxConnections int `json:"maxConnections,omitempty"`
	// MaxConnectionsPerPeer open at once from one IP. Default 1024.
	MaxConnectionsPerPeer int `json:"maxConnectionsPerPeer,omitempty"`
	// MaxStreamsPerConnection: concurrent calls on one connection. Default 256.
	MaxStreamsPerConnection uint32 `json:"maxStreamsPerConnection,omitempty"`
	// MaxWatches: bundle watch streams open at once; more fail with
	// ResourceExhausted. Default 16384.
	MaxWatches int `json:"maxWatches,omitempty"`
	// MaxWatchesPerPeer: bundle watch streams from one IP. Default 1024.
	MaxWatchesPerPeer int `json:"maxWatchesPerPeer,omitempty"`
	// MaxConnectionIdle closes a connection without calls for that long.
	// Default 5m.
	MaxConnectionIdle duration `json:"maxConnectionIdle,omitempty"`
	// MaxConnectionAge closes every connection after about that long
	// (watches reconnect), with MaxConnectionAgeGrace for calls to finish.
	// Default 30m and 1m.
	MaxConnectionAge      duration `json:"maxConnectionAge,omitempty"`
	MaxConnectionAgeGrace duration `json:"maxConnectionAgeGrace,omitempty"`
	// KeepaliveTime: the server pings a connection silent that long and
	// closes it without an answer within KeepaliveTimeout. Default 1m, 20s.
	KeepaliveTime    duration `json:"keepaliveTime,omitempty"`
	KeepaliveTimeout duration `json:"keepaliveTimeout,omitempty"`
	// MinPingInterval: a client pinging more often is disconnected.
	// Default 10s.
	MinPingInterval duration `json:"minPingInterval,omitempty"`
	// HandshakeTimeout bounds the TLS handshake of a new connection.
	// Default 10s.
	HandshakeTimeout duration `json:"handshakeTimeout,omitempty"`
	// RequestTimeout ends a call whose request message has not arrived
	// that long after its headers. Default 10s.
	RequestTimeout duration `json:"requestTimeout,omitempty"`
	// MaxHeaderListSize bounds one call's headers in bytes; a call with
	// more is reset. Default 32768 (32 KiB).
	MaxHeaderListSize uint32 `json:"maxHeaderListSize,omitempty"`
}

func (l limitsConfig) grpclimit() grpclimit.Config {
	return grpclimit.Config{
		MaxConnections: l.MaxConnections, MaxConnectionsPerPeer: l.MaxConnectionsPerPeer,
		MaxStreamsPerConnection: l.MaxStreamsPerConnection,
		MaxWatches:              l.MaxWatches, MaxWatchesPerPeer: l.MaxWatchesPerPeer,
		MaxConnectionIdle: time.Duration(l.MaxConnectionIdle), MaxConnectionAge: time.Duration(l.MaxConnectionAge),
		MaxConnectionAgeGrace: time.Duration(l.MaxConnectionAgeGrace),
		KeepaliveTime:         time.Duration(l.KeepaliveTime), KeepaliveTimeout: time.Duration(l.KeepaliveTimeout),
		MinPingInterval: time.Duration(l.MinPingInterval), HandshakeTimeout: time.Duration(l.HandshakeTimeout),
		RequestTimeout: time.Duration(l.RequestTimeout), MaxHeaderListSize: l.MaxHeaderListSize,
	}
}

func (l limitsConfig) validate() error { return l.grpclimit().Validate() }
