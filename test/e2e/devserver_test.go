package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/harness"
)

const (
	// readyTimeout bounds the wait for a started meshca dev to serve.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds the wait for meshca dev to exit after a signal.
	stopTimeout = 10 * time.Second
	// pollInterval is how often readiness is polled.
	pollInterval = 50 * time.Millisecond
	// portAttempts bounds retries when the chosen free port was taken by
	// another process between our probe and meshca's listen.
	portAttempts = 3
)

// devOptions says how to run `meshca dev`.
type devOptions struct {
	// Dir is the working directory. Empty: a new t.TempDir().
	Dir string
	// DataDir is passed as --data-dir. Empty: no flag, so meshca uses its
	// default ./.meshca-dev under Dir, as in the quick start.
	DataDir string
	// Addr is passed as --listen. Empty: a free 127.0.0.1 port.
	Addr string
	// Args are extra arguments after `dev`.
	Args []string
}

// devServer is a running `meshca dev` process. Its t.Cleanup stops it with
// SIGTERM and reports an error unless it exits 0 within stopTimeout.
type devServer struct {
	// Addr is the 127.0.0.1:port it serves on.
	Addr string
	// Dir is its working directory.
	Dir string
	// DataDir is its data directory, absolute.
	DataDir string
	// name is the command's name in its "<name> stopped" log line.
	name string

	cmd    *exec.Cmd
	stdout testkit.LogBuffer
	stderr testkit.LogBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, set before done is closed

	mu      sync.Mutex
	stopped bool // Stop was called (or the process was killed after a failed start)
}

// errPortTaken says meshca dev could not listen because the port was taken.
var errPortTaken = errors.New("port already in use")

// startDev starts `meshca dev` and waits until it accepts TCP connections and
// has written bundle.pem.
func startDev(t testing.TB, opts devOptions) *devServer {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	for attempt := 1; ; attempt++ {
		srv, err := launchDev(t, opts)
		if err == nil {
			return srv
		}
		if errors.Is(err, errPortTaken) && opts.Addr == "" && attempt < portAttempts {
			t.Logf("meshca dev attempt %d: %v; retrying on another port", attempt, err)
			continue
		}
		t.Fatalf("start meshca dev: %v", err)
	}
}

func launchDev(t testing.TB, opts devOptions) (*devServer, error) {
	t.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = testkit.FreeAddr(t)
	}
	args := []string{"dev", "--listen", addr}
	dataDir := filepath.Join(opts.Dir, ".meshca-dev")
	if opts.DataDir != "" {
		args = append(args, "--data-dir", opts.DataDir)
		dataDir = opts.DataDir
		if !filepath.IsAbs(dataDir) {
			dataDir = filepath.Join(opts.Dir, dataDir)
		}
	}
	args = append(args, opts.Args...)
	s, err := launchServer(t, "meshca dev", opts.Dir, addr, dataDir, args)
	if err != nil {
		return nil, err
	}
	// The banner is printed once the port is bound, so it may reach stdout
	// a moment after the server accepts connections; tests read it whole.
	if err := s.waitStdout(devBannerEnd); err != nil {
		s.kill()
		return nil, err
	}
	return s, nil
}

// devBannerEnd is the last line of the banner `meshca dev` prints.
const devBannerEnd = "Stop with Ctrl-C."

// waitStdout polls until stdout holds want, the process exits, or
// readyTimeout passes.
func (s *devServer) waitStdout(want string) error {
	deadline := time.Now().Add(readyTimeout)
	for !strings.Contains(s.Stdout(), want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%q not printed within %v:\n%s", want, readyTimeout, s.Output())
		}
		select {
		case <-s.done:
			return fmt.Errorf("exited before printing %q: %v\n%s", want, s.err, s.Output())
		case <-time.After(pollInterval):
		}
	}
	return nil
}

// launchServer runs meshca with args in dir, a server that logs
// "<name> stopped" on exit, serves on addr and writes bundle.pem into
// dataDir, and waits until it is ready.
func launchServer(t testing.TB, name, dir, addr, dataDir string, args []string) (*devServer, error) {
	t.Helper()
	s := &devServer{Addr: addr, Dir: dir, DataDir: dataDir, name: name, done: make(chan struct{})}
	s.cmd = exec.Command(meshcaBin, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.cleanup(t) })

	if err := s.waitReady(); err != nil {
		s.kill()
		if strings.Contains(s.stderr.String(), "address already in use") {
			return nil, fmt.Errorf("%s: %w", addr, errPortTaken)
		}
		return nil, fmt.Errorf("meshca %s: %w\n%s", strings.Join(args, " "), err, s.Output())
	}
	return s, nil
}

// waitReady polls until the server accepts TCP connections on Addr and
// bundle.pem exists, the process exits, or readyTimeout passes.
func (s *devServer) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited before becoming ready: %v", s.err)
		default:
		}
		if harness.CanConnect(s.Addr) && fileExists(s.BundlePath()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v (TCP %s, %s)", readyTimeout, s.Addr, s.BundlePath())
		}
		select {
		case <-s.done:
		case <-time.After(pollInterval):
		}
	}
}

// Stop sends sig and reports an error unless the process exits 0 within
// stopTimeout and logs that it stopped. It is safe to call once; the cleanup
// then does nothing.
func (s *devServer) Stop(t testing.TB, sig os.Signal) {
	t.Helper()
	s.mu.Lock()
	already := s.stopped
	s.stopped = true
	s.mu.Unlock()
	if already {
		t.Fatalf("meshca dev on %s stopped twice", s.Addr)
	}
	s.stop(t, sig)
}

func (s *devServer) stop(t testing.TB, sig os.Signal) {
	t.Helper()
	select {
	case <-s.done:
		t.Errorf("meshca dev on %s exited before it was stopped: %v\n%s", s.Addr, s.err, s.Output())
		return
	default:
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Errorf("signal meshca dev: %v", err)
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.kill()
		t.Errorf("meshca dev on %s did not exit within %v of %v; killed\n%s", s.Addr, stopTimeout, sig, s.Output())
		return
	}
	if s.err != nil {
		t.Errorf("meshca dev on %s after %v: %v, want exit code 0\n%s", s.Addr, sig, s.err, s.Output())
	}
	if !strings.Contains(s.stderr.String(), s.name+" stopped") {
		t.Errorf("%s on %s did not log \"%s stopped\" after %v\n%s", s.name, s.Addr, s.name, sig, s.Output())
	}
}

// cleanup stops the server with SIGTERM unless the test already stopped it.
func (s *devServer) cleanup(t testing.TB) {
	s.mu.Lock()
	already := s.stopped
	s.stopped = true
	s.mu.Unlock()
	if !already {
		s.stop(t, syscall.SIGTERM)
	}
}

// kill ends the process without ceremony and waits for it, after a failure
// has already been reported.
func (s *devServer) kill() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	_ = s.cmd.Process.Kill()
	<-s.done
}

// BundlePath is the root bundle meshca dev writes into its data dir.
func (s *devServer) BundlePath() string { return filepath.Join(s.DataDir, "bundle.pem") }

// Stdout is the banner and anything else printed so far.
func (s *devServer) Stdout() string { return s.stdout.String() }

// Stderr is the JSON log so far.
func (s *devServer) Stderr() string { return s.stderr.String() }

// Output is both streams, for failure messages.
func (s *devServer) Output() string {
	return fmt.Sprintf("meshca dev stdout:\n%s\nmeshca dev stderr:\n%s", s.Stdout(), s.Stderr())
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
