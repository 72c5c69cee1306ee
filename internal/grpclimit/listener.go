package grpclimit

import "net"

// Listener wraps lis so that connections past MaxConnections, or past
// MaxConnectionsPerPeer from one IP address, are closed as soon as they
// are accepted, before any TLS work. A connection counts until it is
// closed. Closing the returned listener closes lis.
func (l *Limits) Listener(lis net.Listener) net.Listener {
	return &listener{Listener: lis, conns: l.conns}
}

type listener struct {
	net.Listener
	conns *counter
}

// Accept returns the next connection within the caps; refused ones are
// closed here and never returned, so that gRPC does not back off.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := l.conns.acquire(hostOf(c.RemoteAddr()))
		if err != nil {
			_ = c.Close() // refused: nothing to report to the peer
			continue
		}
		return &conn{Conn: c, release: release}, nil
	}
}

// conn gives its slot back when closed (release is idempotent).
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
