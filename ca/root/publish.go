package root

import (
	"sync/atomic"
	"time"

	"github.com/meshca/meshca/trust"
)

// publisher holds the published bundle and wakes watchers when it changes.
// current is lock-free; publish is called with Root.mu held, so publishes
// never race. Every bundle but possibly the first (see publish) is signed.
type publisher struct {
	st atomic.Pointer[published]
}

type published struct {
	bundle  *trust.TrustBundle
	changed chan struct{}
}

// current returns the published bundle and its change channel; nil and nil
// before the first publish.
func (p *publisher) current() (*trust.TrustBundle, <-chan struct{}) {
	st := p.st.Load()
	if st == nil {
		return nil, nil
	}
	return st.bundle, st.changed
}

// publish makes b current unless it has the same content as the current
// bundle and that one is signed, and returns the bundle now current. A new
// bundle's sequence is max(previous+1, now in Unix milliseconds), so that
// it grows across restarts too as long as the clock does not go back.
//
// sign signs the new bundle once its sequence is set. When it fails, the
// current bundle stays current and the error is returned: receivers verify
// signatures, so an unsigned replacement would only be dropped by them.
// Only the very first bundle is published unsigned (with the error), so
// that there is always one.
func (p *publisher) publish(b *trust.TrustBundle, now time.Time, sign func(*trust.TrustBundle) error) (*trust.TrustBundle, error) {
	old := p.st.Load()
	var prev uint64
	if old != nil {
		if old.bundle.Equal(b) && old.bundle.IsSigned() {
			return old.bundle, nil
		}
		prev = old.bundle.Sequence
	}
	b.Sequence = prev + 1
	if ms := now.UnixMilli(); ms > 0 && uint64(ms) > b.Sequence {
		b.Sequence = uint64(ms)
	}
	err := sign(b)
	if err != nil && old != nil {
		return old.bundle, err
	}
	p.st.Store(&published{bundle: b, changed: make(chan struct{})})
	if old != nil {
		close(old.changed)
	}
	return b, err
}
