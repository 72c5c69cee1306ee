package interop

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// proc is a child process a test started. Its stdout and stderr are
// collected; t.Cleanup stops it with SIGTERM (SIGKILL after stopTimeout) and
// reports an exit before that as an error.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	// exited is closed once the process has been reaped; waitErr is valid
	// after that.
	exited  chan struct{}
	waitErr error
	// reported is set once an early exit has failed the test, so that the
	// cleanup does not report it again; stopped once stop ran. Both are used
	// by the test goroutine only.
	reported, stopped bool
}

// startProc starts cmd, whose Stdout and Stderr it sets, and registers its
// stop with t.Cleanup.
func startProc(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) output() string { return p.name + " output:\n" + p.out.String() }

// failIfExited fails the test now if the process has exited.
func (p *proc) failIfExited(t testing.TB) {
	t.Helper()
	select {
	case <-p.exited:
		p.reported = true
		t.Fatalf("%s exited: %v\n%s", p.name, p.waitErr, p.output())
	default:
	}
}

// stop sends SIGTERM and waits for the exit; it reports an error if the
// process had exited already or does not exit within stopTimeout. It does
// nothing the second time. The exit status after SIGTERM is returned, for
// callers that hold the process to a clean exit.
func (p *proc) stop(t testing.TB) error {
	t.Helper()
	if p.stopped {
		return nil
	}
	p.stopped = true
	select {
	case <-p.exited:
		if !p.reported {
			t.Errorf("%s exited before the test ended: %v\n%s", p.name, p.waitErr, p.output())
		}
		return p.waitErr
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("%s did not exit within %v of SIGTERM; killed\n%s", p.name, stopTimeout, p.output())
		return p.waitErr
	}
}
