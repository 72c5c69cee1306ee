package testkit

import (
	"testing"
	"time"
)

// Eventually calls cond every 10 ms until it returns nil, and fails tb (with
// what and cond's last error) if that has not happened within timeout. It is
// for loops that run on real time; under testing/synctest the sleeps between
// calls advance the fake clock instead.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
