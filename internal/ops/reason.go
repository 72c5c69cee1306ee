package ops

import "errors"

// hiddenError is a readiness failure whose detail stays in the logs: /readyz
// shows only its public reason.
type hiddenError struct {
	public string
	err    error
}

func (e *hiddenError) Error() string { return e.public + ": " + e.err.Error() }
func (e *hiddenError) Unwrap() error { return e.err }

// Hide returns a readiness failure that /readyz reports as public alone,
// while logs (Follow) get err too. Use it when err may name hosts, users
// or queries (a store's connection error) that an unauthenticated prober
// has no business reading.
func Hide(public string, err error) error {
	return &hiddenError{public: public, err: err}
}

// checkError names the check that failed.
type checkError struct {
	name string
	err  error
}

func (e *checkError) Error() string { return e.name + ": " + e.err.Error() }
func (e *checkError) Unwrap() error { return e.err }

// Public returns what /readyz shows of a failure from Checks.Ready: the
// check's name and its reason, without what Hide kept for the logs.
func Public(err error) string {
	var ce *checkError
	if !errors.As(err, &ce) {
		return err.Error()
	}
	var he *hiddenError
	if errors.As(ce.err, &he) {
		return ce.name + ": " + he.public
	}
	return ce.Error()
}
