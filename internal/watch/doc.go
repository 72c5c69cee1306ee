// Package watch holds a current value that readers can wait on: Value
// pairs the value with a channel closed when it is replaced, so that a
// reader loads both at once and cannot miss a change between reading and
// waiting. Readers never lock, so that a thousand streams woken by one
// change do not queue on a mutex.
package watch
