package root

import (
	"time"

	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/trust"
)

// publisher holds the published bundle and wakes watchers when it changes.
// current is lock-free; publish is called with Root.mu held, so publishes
// never race. Every bundle but possibly the first (see publish) is signed.
type publisher struct {
	v watch.Value[*trust.TrustBundle]
}

// current returns the published bundle, nil before the first publish, and
// a channel closed when a newer one is published.
func (p *publisher) current() (*trust.TrustBundle, <-chan struct{}) { return p.v.Load() }

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
	old, _ := p.v.Load()
	var prev uint64
	if old != nil {
		if old.Equal(b) && old.IsSigned() {
			return old, nil
		}
		prev = old.Sequence
	}
	b.Sequence = prev + 1
	if ms := now.UnixMilli(); ms > 0 && uint64(ms) > b.Sequence {
		b.Sequence = uint64(ms)
	}
	err := sign(b)
	if err != nil && old != nil {
		return old, err
	}
	p.v.Store(b)
	return b, err
}
