// Command pause is the pod sandbox process of the test bed's container
// runtime: it holds the pod's namespaces open by sleeping until it is told
// to stop, and, as PID 1 of a pod that shares its process namespace, reaps
// the children that get re-parented to it. It is what registry.k8s.io/pause
// does, in Go, so that the image can be built here without a registry
// (`make images` builds localhost/pause from it).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking; one SIGCHLD may stand
// for several exits.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
