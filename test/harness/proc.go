package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

const (
	// StartTimeout bounds how long a process may take to start serving.
	StartTimeout = 60 * time.Second
	// StopTimeout bounds how long a process may take to exit after SIGTERM.
	StopTimeout = 15 * time.Second
	// RunTimeout bounds a one-shot command.
	RunTimeout = time.Minute
)

// secrets are what no process's log may contain, by name: PEM private
// keys, JWTs (a JSON header, a payload and the dots after them, so that
// base64 text that merely holds "eyJ", such as a key id, is not one) and
// join tokens.
var secrets = []struct {
	name string
	re   *regexp.Regexp
}{
	{"PRIVATE KEY", regexp.MustCompile(`PRIVATE KEY`)},
	{"eyJ", regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.`)},
	{"mjt1.", regexp.MustCompile(`mjt1\.`)},
}

// findSecrets returns, for each secret in out whose name is not in
// allowed, the name and the line it stands in, cut at the secret so that
// the report does not repeat it.
func findSecrets(out string, allowed []string) []string {
	var found []string
	for _, s := range secrets {
		if slices.Contains(allowed, s.name) {
			continue
		}
		if loc := s.re.FindStringIndex(out); loc != nil {
			start := strings.LastIndexByte(out[:loc[0]], '\n') + 1
			found = append(found, fmt.Sprintf("%q in: %s…", s.name, out[max(start, loc[0]-200):loc[0]]))
		}
	}
	return found
}

// Proc is a running process. Its stdout and stderr go to one buffer.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  testkit.LogBuffer
	done chan struct{}
	err  error
}

// Start starts bin with args; name says which process it is in failure
// messages. At the end of the test the process is stopped (Stop), its output
// logged if the test failed, and the test fails if the output holds key
// material or tokens. The process is killed if the test binary dies.
func Start(t testing.TB, bin, name string, args ...string) *Proc {
	t.Helper()
	return StartLogging(t, nil, bin, name, args...)
}

// StartLogging is Start for a process that logs some of the secrets Start
// checks for by design, e.g. step-ca, which logs every one-time token it
// redeems ("eyJ"): its output may hold those in allowed and is still
// checked for the others.
func StartLogging(t testing.TB, allowed []string, bin, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.out.String())
		}
		for _, f := range findSecrets(p.out.String(), allowed) {
			t.Errorf("%s logged secret material: %s", name, f)
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process exited (nil for exit code 0); it is meaningful
// only once Done is closed.
func (p *Proc) Err() error { return p.err }

// Stop sends SIGTERM, waits for the process to exit and returns how it
// exited. It fails the test (and kills the process) if the process takes
// longer than StopTimeout. Once the process has exited it only returns how.
func (p *Proc) Stop(t testing.TB) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within %v of SIGTERM", p.name, StopTimeout)
	}
	return p.err
}

// Kill sends SIGKILL, as a crash or an OOM kill would, and returns once the
// process has been reaped.
func (p *Proc) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil {
		return err
	}
	<-p.done
	return nil
}

// WaitFor polls cond until it holds, and fails the test if the process
// exits first or timeout passes.
func (p *Proc) WaitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) while waiting for %s\n%s", p.name, p.err, what, p.out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %v\n%s", p.name, what, timeout, p.out.String())
		}
	}
}

// WaitListening waits up to StartTimeout until addr accepts TCP connections.
func (p *Proc) WaitListening(t *testing.T, addr string) {
	t.Helper()
	p.WaitFor(t, "listener on "+addr, StartTimeout, func() bool { return CanConnect(addr) })
}

// CanConnect says whether addr accepts a TCP connection within a second.
func CanConnect(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Run runs bin with args to completion (at most RunTimeout) and returns its
// stdout; a non-zero exit is an error that carries both streams.
func Run(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), RunTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("meshca %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// WriteFile writes content to path (mode 0600), creating its directory,
// and returns path.
func WriteFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
