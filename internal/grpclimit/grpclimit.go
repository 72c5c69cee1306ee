// Package grpclimit bounds what a meshca gRPC server holds for its peers:
// open connections (in all and per peer address), streams per connection,
// long-lived watch streams (in all and per peer), idle and old connections,
// silent peers (keepalive) and slow handshakes. The issuer and the root
// share it, so that both apply the same limits with the same defaults.
//
// A peer is a remote IP address: every pod has its own, so the per-peer
// caps stop one compromised or misbehaving workload from taking the
// server's share of everyone. Clients that reach a server through one
// address (a NAT, a TCP gateway) share a per-peer cap; raise it for them.
package grpclimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/meshca/meshca/internal/grpcx"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
)

// Defaults applied to zero Config fields. They suit a server of a cluster
// of many thousand pods: an agent holds one connection with one watch
// stream and, now and then, one certificate request.
const (
	defaultMaxConnections          = 16384
	defaultMaxConnectionsPerPeer   = 1024
	defaultMaxStreamsPerConnection = 256
	defaultMaxWatches              = 16384
	defaultMaxWatchesPerPeer       = 1024
	defaultMaxConnectionIdle       = 5 * time.Minute
	defaultMaxConnectionAge        = 30 * time.Minute
	defaultMaxConnectionAgeGrace   = time.Minute
	defaultKeepaliveTime           = time.Minute
	defaultKeepaliveTimeout        = 20 * time.Second
	defaultMinPingInterval         = 10 * time.Second
	defaultHandshakeTimeout        = 10 * time.Second
	defaultRequestTimeout          = 10 * time.Second
	// A call's largest legitimate header is its bearer token, which
	// attestation caps at 16 KiB; gRPC's own headers add well under 1 KiB.
	defaultMaxHeaderListSize = 32 << 10
)

// ErrLimit is wrapped by the error of a watch refused for a cap. Servers
// map it to codes.ResourceExhausted.
var ErrLimit = grpcx.Mark(errors.New("limit reached"), grpcx.ErrResourceExhausted)

// Config sets the limits. Zero values mean the defaults above; negative
// values are invalid.
type Config struct {
	// MaxConnections bounds the connections open at once; more are closed
	// as soon as they are accepted. Zero means 16384.
	MaxConnections int
	// MaxConnectionsPerPeer bounds the connections open at once from one
	// IP address. Zero means 1024.
	MaxConnectionsPerPeer int
	// MaxStreamsPerConnection bounds the concurrent calls on one
	// connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). Zero means 256.
	MaxStreamsPerConnection uint32
	// MaxWatches bounds the watch streams open at once; more fail with
	// ResourceExhausted. Zero means 16384.
	MaxWatches int
	// MaxWatchesPerPeer bounds the watch streams open at once from one IP
	// address. Zero means 1024.
	MaxWatchesPerPeer int
	// MaxConnectionIdle closes a connection that has had no call for that
	// long. Zero means 5m.
	MaxConnectionIdle time.Duration
	// MaxConnectionAge closes every connection after about that long
	// (gRPC adds ±10% of jitter), watch streams included: clients
	// reconnect, so that the load spreads over replicas and no peer holds
	// a connection forever. Zero means 30m.
	MaxConnectionAge time.Duration
	// MaxConnectionAgeGrace is how long calls may still finish on a
	// connection past its age. Zero means 1m.
	MaxConnectionAgeGrace time.Duration
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it; KeepaliveTimeout is how long it waits for the
	// answer before closing it. They close connections whose client
	// vanished without a word. Zero means 1m and 20s.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MinPingInterval is the shortest interval between a client's pings;
	// a client that pings more often is disconnected. Pings are allowed
	// without calls in flight (they do not reset MaxConnectionIdle). Zero
	// means 10s.
	MinPingInterval time.Duration
	// HandshakeTimeout bounds the TLS handshake and the HTTP/2 preface of
	// a new connection. Zero means 10s.
	HandshakeTimeout time.Duration
	// RequestTimeout bounds the time from a call's headers to its first
	// request message; a call still waiting then is ended. Without it, a
	// call whose message never comes holds its stream and headers until
	// the connection's age ends it. Zero means 10s.
	RequestTimeout time.Duration
	// MaxHeaderListSize bounds the headers of one call (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE, after HPACK decoding); a call with
	// more is refused before anything holds them (the call is reset or the
	// connection closed). Zero means 32 KiB, twice the largest token
	// attestation accepts; grpc-go's own default is 16 MiB.
	MaxHeaderListSize uint32
	// Logger receives refusals (at most one line per cap and second); nil
	// means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	for name, v := range map[string]int{
		"max connections": c.MaxConnections, "max connections per peer": c.MaxConnectionsPerPeer,
		"max watches": c.MaxWatches, "max watches per peer": c.MaxWatchesPerPeer,
	} {
		if v < 0 {
			return fmt.Errorf("limits: negative %s %d", name, v)
		}
	}
	for name, d := range map[string]time.Duration{
		"max connection idle": c.MaxConnectionIdle, "max connection age": c.MaxConnectionAge,
		"max connection age grace": c.MaxConnectionAgeGrace, "keepalive time": c.KeepaliveTime,
		"keepalive timeout": c.KeepaliveTimeout, "min ping interval": c.MinPingInterval,
		"handshake timeout": c.HandshakeTimeout, "request timeout": c.RequestTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("limits: negative %s %v", name, d)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.MaxConnections = cmp.Or(c.MaxConnections, defaultMaxConnections)
	c.MaxConnectionsPerPeer = cmp.Or(c.MaxConnectionsPerPeer, defaultMaxConnectionsPerPeer)
	c.MaxWatches = cmp.Or(c.MaxWatches, defaultMaxWatches)
	c.MaxWatchesPerPeer = cmp.Or(c.MaxWatchesPerPeer, defaultMaxWatchesPerPeer)
	c.MaxStreamsPerConnection = cmp.Or(c.MaxStreamsPerConnection, defaultMaxStreamsPerConnection)
	c.MaxConnectionIdle = cmp.Or(c.MaxConnectionIdle, defaultMaxConnectionIdle)
	c.MaxConnectionAge = cmp.Or(c.MaxConnectionAge, defaultMaxConnectionAge)
	c.MaxConnectionAgeGrace = cmp.Or(c.MaxConnectionAgeGrace, defaultMaxConnectionAgeGrace)
	c.KeepaliveTime = cmp.Or(c.KeepaliveTime, defaultKeepaliveTime)
	c.KeepaliveTimeout = cmp.Or(c.KeepaliveTimeout, defaultKeepaliveTimeout)
	c.MinPingInterval = cmp.Or(c.MinPingInterval, defaultMinPingInterval)
	c.HandshakeTimeout = cmp.Or(c.HandshakeTimeout, defaultHandshakeTimeout)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, defaultRequestTimeout)
	c.MaxHeaderListSize = cmp.Or(c.MaxHeaderListSize, defaultMaxHeaderListSize)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Limits enforces a Config on one server: pass ServerOptions to
// grpc.NewServer, serve on Listener(lis), and call AcquireWatch at the
// start of every watch stream. It is safe for concurrent use.
type Limits struct {
	cfg     Config
	conns   *counter
	watches *counter
}

// New returns the Limits of cfg, defaults applied. cfg must be valid (see
// Validate).
func New(cfg Config) (*Limits, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Limits{
		cfg:     cfg,
		conns:   newCounter("connection", cfg.MaxConnections, cfg.MaxConnectionsPerPeer, cfg.Logger),
		watches: newCounter("watch stream", cfg.MaxWatches, cfg.MaxWatchesPerPeer, cfg.Logger),
	}, nil
}

// ServerOptions are the gRPC server options of the limits: keepalive
// parameters and enforcement, streams per connection, header size,
// handshake and request timeouts.
func (l *Limits) ServerOptions() []grpc.ServerOption {
	c := l.cfg
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(c.HandshakeTimeout),
		grpc.MaxConcurrentStreams(c.MaxStreamsPerConnection),
		grpc.MaxHeaderListSize(c.MaxHeaderListSize),
		grpc.InTapHandle(l.startRequestTimer),
		grpc.ChainUnaryInterceptor(requestArrived),
		grpc.ChainStreamInterceptor(firstRequestArrives),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: c.MaxConnectionIdle, MaxConnectionAge: c.MaxConnectionAge,
			MaxConnectionAgeGrace: c.MaxConnectionAgeGrace, Time: c.KeepaliveTime, Timeout: c.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: c.MinPingInterval, PermitWithoutStream: true}),
	}
}

// AcquireWatch takes a watch slot for the peer of ctx (a gRPC stream's
// context) and returns the function that gives it back; call it exactly
// once, when the stream ends. Past a cap it fails with an error wrapping
// ErrLimit.
func (l *Limits) AcquireWatch(ctx context.Context) (release func(), err error) {
	key := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		key = hostOf(p.Addr)
	}
	return l.watches.acquire(key)
}

// hostOf is the IP address of addr, or its whole string when it has no
// port (a Unix socket, a test address).
func hostOf(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// counter counts holders in all and per key, within caps.
type counter struct {
	what        string
	max, perKey int
	log         *slog.Logger

	mu    sync.Mutex
	total int
	byKey map[string]int
	// lastLog and refusedSince throttle the refusal log.
	lastLog      time.Time
	refusedSince int
}

func newCounter(what string, max, perKey int, log *slog.Logger) *counter {
	return &counter{what: what, max: max, perKey: perKey, log: log, byKey: map[string]int{}}
}

func (c *counter) acquire(key string) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	switch {
	case c.total >= c.max:
		err = fmt.Errorf("%w: %d %ss open, the maximum", ErrLimit, c.total, c.what)
	case c.byKey[key] >= c.perKey:
		err = fmt.Errorf("%w: %d %ss open from %s, the maximum per peer", ErrLimit, c.byKey[key], c.what, key)
	}
	if err != nil {
		c.refused(key, err)
		return nil, err
	}
	c.total++
	c.byKey[key]++
	var once sync.Once
	return func() { once.Do(func() { c.release(key) }) }, nil
}

func (c *counter) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byKey[key]--; c.byKey[key] <= 0 {
		delete(c.byKey, key)
	}
}

// refused logs a refusal, at most once a second: a flood must not flood
// the log too. Called with mu held.
func (c *counter) refused(key string, err error) {
	c.refusedSince++
	now := time.Now()
	if now.Sub(c.lastLog) < time.Second {
		return
	}
	c.log.Warn(c.what+" refused", "peer", key, "reason", err.Error(), "refused_since_last_log", c.refusedSince)
	c.lastLog, c.refusedSince = now, 0
}
