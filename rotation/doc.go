// Package rotation decides when to renew a certificate and runs the renewal
// loop. Every decision is a pure function of the current time (and of a
// jitter value passed in), so it can be table-tested; the loop waits on the
// time package's timers (tests run it under testing/synctest) and does no
// I/O itself: it calls the Renewer it is given.
package rotation
