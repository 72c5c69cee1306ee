package unixsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// maxPathLen is the longest Unix socket path every platform accepts
// (sun_path is 104 bytes on the BSDs, 108 on Linux, with a NUL).
const maxPathLen = 103

// Config describes one listening Unix socket.
type Config struct {
	// Path of the socket, at most MaxPathLen bytes. Required.
	Path string
	// Mode is the socket file's permission mode; zero means 0600.
	Mode os.FileMode
	// GID, when not nil, is the group the socket file is given; nil means
	// the process's.
	GID *int
	// DirMode is the mode the socket's directory is created with when
	// missing (an existing one is left as it is); zero means 0700.
	DirMode os.FileMode
	// Peers restricts the processes served; the zero value checks nothing
	// beyond the file mode.
	Peers PeerPolicy
	// Name identifies the socket in logs; empty means Path.
	Name string
	// Logger receives one line per refused connection; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("socket path is required")
	case len(c.Path) > maxPathLen:
		return fmt.Errorf("socket path %s is %d bytes long; the limit is %d", c.Path, len(c.Path), maxPathLen)
	case c.Mode&^os.ModePerm != 0 || c.DirMode&^os.ModePerm != 0:
		return fmt.Errorf("socket %s: modes %v and %v: only permission bits", c.Path, c.Mode, c.DirMode)
	case c.GID != nil && *c.GID < 0:
		return fmt.Errorf("socket %s: group %d is negative", c.Path, *c.GID)
	}
	if err := c.Peers.Validate(); err != nil {
		return fmt.Errorf("socket %s: %w", c.Path, err)
	}
	return nil
}

// Listen listens on the socket c describes. The returned listener's
// Accept serves only the peers c.Peers allows; its Close removes the
// socket file unless someone replaced it.
func Listen(c Config) (net.Listener, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Mode == 0 {
		c.Mode = 0o600
	}
	if c.DirMode == 0 {
		c.DirMode = 0o700
	}
	if c.Name == "" {
		c.Name = c.Path
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	dir := filepath.Dir(c.Path)
	if err := os.MkdirAll(dir, c.DirMode); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := checkStale(c.Path); err != nil {
		return nil, err
	}
	lis, err := bindPrivately(c)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(c.Path)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("socket %s: %w", c.Path, err)
	}
	return &listener{UnixListener: lis, cfg: c, file: fi}, nil
}

// bindPrivately binds the socket in a private temporary directory next to
// c.Path, gives it its group and mode, and renames it to c.Path.
func bindPrivately(c Config) (*net.UnixListener, error) {
	tmpDir, err := os.MkdirTemp(filepath.Dir(c.Path), ".s")
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.Path, err)
	}
	lis.SetUnlinkOnClose(false)
	if c.GID != nil {
		if err := os.Lchown(tmp, -1, *c.GID); err != nil {
			lis.Close()
			return nil, fmt.Errorf("socket %s: group: %w", c.Path, err)
		}
	}
	if err := os.Chmod(tmp, c.Mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("socket %s: %w", c.Path, err)
	}
	if err := os.Rename(tmp, c.Path); err != nil {
		lis.Close()
		return nil, fmt.Errorf("socket %s: %w", c.Path, err)
	}
	return lis, nil
}

// checkStale returns nil when path does not exist or is a socket nobody
// listens on (it is then replaced by the rename).
func checkStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("socket %s: %w", path, err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("socket %s: a file that is not a socket is in the way", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("socket %s: another process is serving it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is stale: %w", path, err)
	}
	return nil
}

// listener serves the peers its policy allows and removes its socket file
// when closed, unless the file was replaced by someone else meanwhile.
type listener struct {
	*net.UnixListener
	cfg  Config
	file os.FileInfo
	once sync.Once
}

// Accept returns the next connection from an allowed peer (a
// *net.UnixConn); others are logged and closed. It returns an error only
// when the underlying listener does.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if l.admit(c) {
			return c, nil
		}
		_ = c.Close() // refused; the peer learns nothing but a closed connection
	}
}

// admit reports whether the policy allows the peer of c, logging why not.
func (l *listener) admit(c net.Conn) bool {
	if !l.cfg.Peers.Enabled() {
		return true
	}
	cred, err := PeerCred(c)
	if err != nil {
		l.cfg.Logger.Warn("connection refused: cannot read the peer's credentials", "socket", l.cfg.Name, "error", err.Error())
		return false
	}
	if !l.cfg.Peers.allows(cred) {
		l.cfg.Logger.Warn("connection refused: peer uid and gid not allowed", "socket", l.cfg.Name,
			"peer_uid", cred.UID, "peer_gid", cred.GID, "peer_pid", cred.PID)
		return false
	}
	return true
}

// Close stops listening and removes the socket file.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, statErr := os.Lstat(l.cfg.Path); statErr == nil && os.SameFile(fi, l.file) {
			if rmErr := os.Remove(l.cfg.Path); rmErr != nil && err == nil {
				err = fmt.Errorf("remove socket %s: %w", l.cfg.Path, rmErr)
			}
		}
	})
	return err
}
