package rootserver

import (
	"sync/atomic"
	"time"

	"github.com/meshca/meshca/ca"
)

// publisher holds the published bundle and wakes watchers when it changes.
// current is lock-free; publish is called with Root.mu held, so publishes
// never race.
type publisher struct {
	st atomic.Pointer[published]
}

type published struct {
	bundle  *ca.TrustBundle
	changed chan struct{}
}

func (p *publisher) current() (*ca.TrustBundle, <-chan struct{}) {
	st := p.st.Load()
	return st.bundle, st.changed
}

// publish makes b current unless it has the same content as the current
// bundle, and returns the bundle now current. A new bundle's sequence is
// max(previous+1, now in Unix milliseconds), so that it grows across
// restarts too as long as the clock does not go back.
func (p *publisher) publish(b *ca.TrustBundle, now time.Time) *ca.TrustBundle {
	old := p.st.Load()
	var prev uint64
	if old != nil {
		if old.bundle.Equal(b) {
			return old.bundle
		}
		prev = old.bundle.Sequence
	}
	b.Sequence = prev + 1
	if ms := now.UnixMilli(); ms > 0 && uint64(ms) > b.Sequence {
		b.Sequence = uint64(ms)
	}
	p.st.Store(&published{bundle: b, changed: make(chan struct{})})
	if old != nil {
		close(old.changed)
	}
	return b
}
