package agent

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Default stream limits, per socket. Measured on the agent binary, an open
// Workload API stream costs about 11 KiB and a connection about 300 KiB
// (HTTP/2 buffers and flow-control windows), so a flood at the defaults
// adds about 20 MiB per socket to a sidecar that idles at about 18 MiB,
// while Envoy (a handful of streams on one or two connections) and a few
// application processes stay far below them.
const (
	defaultMaxConnections          = 32
	defaultMaxStreamsPerConnection = 256
	defaultMaxStreams              = 1024
)

// StreamLimits bound what the clients of one of the agent's sockets may
// hold open, so that a local process cannot grow the agent past its memory
// limit. Each socket (SDS, Workload API) has its own budget.
type StreamLimits struct {
	// MaxConnections caps the connections open at once; further ones are
	// closed as soon as they are accepted. Zero means
	// defaultMaxConnections.
	MaxConnections int
	// MaxStreamsPerConnection is the HTTP/2 concurrent stream limit
	// announced to each client (gRPC clients queue streams beyond it).
	// Zero means defaultMaxStreamsPerConnection.
	MaxStreamsPerConnection int
	// MaxStreams caps the streams and unary calls open at once over all
	// connections; further ones fail with ResourceExhausted. Zero means
	// defaultMaxStreams.
	MaxStreams int
}

func (l StreamLimits) withDefaults() StreamLimits {
	l.MaxConnections = cmp.Or(l.MaxConnections, defaultMaxConnections)
	l.MaxStreamsPerConnection = cmp.Or(l.MaxStreamsPerConnection, defaultMaxStreamsPerConnection)
	l.MaxStreams = cmp.Or(l.MaxStreams, defaultMaxStreams)
	return l
}

func (l StreamLimits) validate() error {
	if l.MaxConnections < 0 || l.MaxStreamsPerConnection < 0 || l.MaxStreams < 0 || l.MaxStreamsPerConnection > math.MaxUint32 {
		return errors.New("stream limits must not be negative")
	}
	return nil
}

// streamGate counts the streams and unary calls open on one gRPC server
// and refuses those beyond its cap. A unary call holds its HTTP/2 stream
// (and whatever its handler does) as long as a stream does.
type streamGate struct {
	name string
	max  int64
	log  *slog.Logger
	open atomic.Int64
	// full is set while streams are refused, so that a flood logs once.
	full atomic.Bool
}

// serverOptions returns the options that enforce l (with defaults applied)
// on a gRPC server; name and log identify it in logs.
func (l StreamLimits) serverOptions(name string, log *slog.Logger) []grpc.ServerOption {
	g := &streamGate{name: name, max: int64(l.MaxStreams), log: log}
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(l.MaxStreamsPerConnection)),
		grpc.ChainStreamInterceptor(g.intercept),
		grpc.ChainUnaryInterceptor(g.interceptUnary),
	}
}

func (g *streamGate) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := g.enter(); err != nil {
		return err
	}
	defer g.leave()
	return h(srv, ss)
}

func (g *streamGate) interceptUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := g.enter(); err != nil {
		return nil, err
	}
	defer g.leave()
	return h(ctx, req)
}

// enter takes a slot, or fails with ResourceExhausted when none is free;
// leave gives a taken one back.
func (g *streamGate) enter() error {
	if g.open.Add(1) > g.max {
		g.open.Add(-1)
		if g.full.CompareAndSwap(false, true) {
			g.log.Warn("stream limit reached; refusing new streams", "socket", g.name, "max_streams", g.max)
		}
		return status.Error(codes.ResourceExhausted, "too many open streams")
	}
	return nil
}

func (g *streamGate) leave() {
	if g.open.Add(-1) < g.max && g.full.CompareAndSwap(true, false) {
		g.log.Info("accepting streams again", "socket", g.name)
	}
}

// cappedListener accepts no more than maxConns connections at a time; it
// closes the others at once, so that their clients fail fast rather than
// queue, and logs them. The clients learn nothing but a closed connection.
type cappedListener struct {
	net.Listener
	name     string
	maxConns int64
	log      *slog.Logger

	open atomic.Int64
	// full is set while connections are refused for the cap, so that a
	// flood logs once, not once per connection.
	full atomic.Bool
}

func newCappedListener(lis net.Listener, name string, maxConns int, log *slog.Logger) *cappedListener {
	return &cappedListener{Listener: lis, name: name, maxConns: int64(maxConns), log: log}
}

// Accept returns the next connection within the cap; it returns an error
// only when the underlying listener does.
func (l *cappedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.maxConns {
			l.open.Add(-1)
			_ = c.Close() // refused
			if l.full.CompareAndSwap(false, true) {
				l.log.Warn("connection limit reached; refusing new connections", "socket", l.name, "max_connections", l.maxConns)
			}
			continue
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// countedConn gives its slot back when closed (once, however often Close
// is called).
type countedConn struct {
	net.Conn
	l    *cappedListener
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.l.open.Add(-1) < c.l.maxConns && c.l.full.CompareAndSwap(true, false) {
			c.l.log.Log(context.Background(), slog.LevelInfo, "accepting connections again", "socket", c.l.name)
		}
	})
	return err
}
