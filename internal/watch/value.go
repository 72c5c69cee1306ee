package watch

import (
	"sync"
	"sync/atomic"
)

// Value is a current value of type T and a channel closed when it is
// next replaced. The zero value holds the zero T and is ready to use. Load
// is lock-free; Store and Update are serialized. A Value must not be
// copied after first use.
type Value[T any] struct {
	mu sync.Mutex // serializes Store and Update
	st atomic.Pointer[state[T]]
}

type state[T any] struct {
	v       T
	changed chan struct{}
}

// New returns a Value holding v.
func New[T any](v T) *Value[T] {
	w := &Value[T]{}
	w.st.Store(&state[T]{v: v, changed: make(chan struct{})})
	return w
}

// Load returns the current value and a channel that is closed when it is
// replaced. Waiting on the channel after using the value misses no change.
func (w *Value[T]) Load() (T, <-chan struct{}) {
	st := w.load()
	return st.v, st.changed
}

// Changed returns the channel Load would return.
func (w *Value[T]) Changed() <-chan struct{} { return w.load().changed }

func (w *Value[T]) load() *state[T] {
	if st := w.st.Load(); st != nil {
		return st
	}
	w.st.CompareAndSwap(nil, &state[T]{changed: make(chan struct{})})
	return w.st.Load()
}

// Store makes v current and wakes every waiter, even when v equals the
// value it replaces.
func (w *Value[T]) Store(v T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.swap(v)
}

// Update calls f with the current value; when f reports a change, its
// result becomes current and every waiter wakes. f runs with Store and
// Update held off, so read-modify-write needs no other lock; it must not
// call Store or Update. Update reports whether f changed the value.
func (w *Value[T]) Update(f func(old T) (T, bool)) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	v, ok := f(w.load().v)
	if ok {
		w.swap(v)
	}
	return ok
}

// swap replaces the state; the caller holds mu.
func (w *Value[T]) swap(v T) {
	old := w.load()
	w.st.Store(&state[T]{v: v, changed: make(chan struct{})})
	close(old.changed)
}
