// Command pause is the pod sandbox process of the test cluster: it holds the
// pod's namespaces open, reaps children it inherits as PID 1, and exits 0 on
// SIGTERM or SIGINT. It is built static (CGO_ENABLED=0) and packed alone into
// the sandbox image by imagepack, because no registry can be reached to pull
// the upstream pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return
		}
		reap()
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
