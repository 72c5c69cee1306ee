package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// GroupCommitConfig tunes a [GroupCommitter].
type GroupCommitConfig struct {
	// MaxBatch is the most items committed in one transaction. Zero means
	// 256; 1 turns batching off (one transaction per item).
	MaxBatch int
	// MaxWait is how long, counted from when the first item of a batch was
	// queued, the writer waits for more before committing, when the store is
	// under load: when, at the recent rate of writes, the wait would collect
	// several more (see underLoad). A lightly loaded store never waits, so a lone writer pays
	// no latency. Zero means the writer never waits: it takes whatever is
	// queued and commits. Batches still form then, from the items that queue
	// up while the previous transaction commits, but a fast commit leaves
	// them small, and each transaction costs CPU (SQLite's fsync): waiting a
	// few milliseconds under load multiplies the batch size
	// (docs/benchmarks.md, issuance section). Negative is invalid.
	MaxWait time.Duration
	// Metrics, when set, observes every commit's duration and batch size
	// and counts failed transactions; nil observes nothing.
	Metrics *Metrics
}

const defaultMaxBatch = 256

// Validate reports whether c is usable.
func (c GroupCommitConfig) Validate() error {
	if c.MaxBatch < 0 {
		return fmt.Errorf("group commit: negative MaxBatch %d", c.MaxBatch)
	}
	if c.MaxWait < 0 {
		return fmt.Errorf("group commit: negative MaxWait %v", c.MaxWait)
	}
	return nil
}

// CommitFunc commits batch (never empty) in one transaction.
//
// A non-nil err means the transaction did not commit: every item in the batch
// fails with err and nothing of the batch may be visible. Otherwise the
// transaction committed and itemErrs is either nil (every item committed) or
// has one entry per item, where a non-nil itemErrs[i] means item i was
// rejected and left no trace while the others committed. Backends reject
// single items without failing their neighbours by giving each item its own
// savepoint inside the transaction.
type CommitFunc[T any] func(ctx context.Context, batch []T) (itemErrs []error, err error)

// GroupCommitter funnels concurrent writes through one writer goroutine that
// commits them in batches, so that N concurrent writers pay for about one
// transaction (one fsync) instead of N.
//
// The writer takes the first queued item, then whatever else is queued up to
// MaxBatch (waiting up to MaxWait for more when under load), calls the
// CommitFunc once for the batch, and answers every caller in the batch.
// Batches are committed one at a time, in the order their items were taken,
// so the CommitFunc is never called concurrently with itself.
type GroupCommitter[T any] struct {
	cfg     GroupCommitConfig
	commit  CommitFunc[T]
	queue   chan *pending[T]
	closing chan struct{} // closed by Close: stop taking new items
	stopped chan struct{} // closed by the writer when it has exited
	once    sync.Once
	// lastBatch is the size of the previous batch and lastCollect when the
	// writer started collecting it; only the writer goroutine uses them.
	lastBatch   int
	lastCollect time.Time
}

// pending is one queued item. Its state decides who owns it: the caller may
// withdraw it while it is queued, the writer may take it into a batch, never
// both.
type pending[T any] struct {
	item   T
	queued time.Time // when Do queued it: the start of its commit window
	state  atomic.Int32
	done   chan error // buffered; receives exactly one result once taken
}

const (
	stateQueued int32 = iota
	stateTaken
	stateWithdrawn
)

// NewGroupCommitter starts the writer goroutine. cfg must be valid; zero
// fields get their defaults. The caller must call Close to stop the writer.
func NewGroupCommitter[T any](cfg GroupCommitConfig, commit CommitFunc[T]) *GroupCommitter[T] {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = defaultMaxBatch
	}
	g := &GroupCommitter[T]{
		cfg:     cfg,
		commit:  commit,
		queue:   make(chan *pending[T], cfg.MaxBatch),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go g.run()
	return g
}

// Do queues item and blocks until the batch holding it has committed or
// failed, and returns that outcome: nil means item is committed.
//
// ctx is respected while item waits in the queue: if ctx is done first, Do
// withdraws item and returns ctx.Err(), and item is never committed. Once its
// batch has started, Do waits for the outcome even if ctx is done, so that an
// error from Do always means item was not committed. After Close, Do returns
// an error wrapping ErrClosed.
func (g *GroupCommitter[T]) Do(ctx context.Context, item T) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-g.closing:
		return ErrClosed
	default:
	}
	p := &pending[T]{item: item, queued: time.Now(), done: make(chan error, 1)}
	select {
	case g.queue <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.closing:
		return ErrClosed
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		if p.state.CompareAndSwap(stateQueued, stateWithdrawn) {
			return ctx.Err()
		}
		return <-p.done
	case <-g.stopped:
		// The writer has exited. It answers every item it took before it
		// exits, so an empty done means this item was never taken.
		select {
		case err := <-p.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// Close stops taking new items, commits the items already queued, waits for
// the writer to exit and returns nil. It blocks for as long as those commits
// take. Calling Close again does nothing.
func (g *GroupCommitter[T]) Close() error {
	g.once.Do(func() { close(g.closing) })
	<-g.stopped
	return nil
}

func (g *GroupCommitter[T]) run() {
	defer close(g.stopped)
	for {
		select {
		case p := <-g.queue:
			g.commitBatch(g.collect(p))
		case <-g.closing:
			// Flush what was queued before Close; Do no longer queues.
			for {
				select {
				case p := <-g.queue:
					g.commitBatch(g.collect(p))
				default:
					return
				}
			}
		}
	}
}

// minExpected is how many more items a wait must be expected to collect to
// be worth its latency.
const minExpected = 4

// underLoad reports whether waiting MaxWait for more items is worth it: at
// the rate items arrived during the previous cycle (the previous batch over
// the time since its collection began), at least minExpected more would
// arrive. With a 5ms MaxWait that is 800 writes per second; below
// it, a write is committed as soon as the writer is free.
func (g *GroupCommitter[T]) underLoad(now time.Time) bool {
	if g.cfg.MaxWait <= 0 || g.lastCollect.IsZero() {
		return false
	}
	cycle := max(now.Sub(g.lastCollect), time.Microsecond)
	return float64(g.lastBatch)*float64(g.cfg.MaxWait)/float64(cycle) >= minExpected
}

// collect returns a batch starting with first, topped up with queued items.
func (g *GroupCommitter[T]) collect(first *pending[T]) []*pending[T] {
	batch := []*pending[T]{first}
	now := time.Now()
	underLoad := g.underLoad(now)
	defer func() { g.lastBatch, g.lastCollect = len(batch), now }()
	// The window runs from when the first item was queued, not from now:
	// an item queued while the previous batch committed has already waited
	// that long, so its wait for the commit stays within MaxWait plus one
	// commit however the batches fall.
	var deadline <-chan time.Time
	if wait := first.queued.Add(g.cfg.MaxWait).Sub(now); underLoad && wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for len(batch) < g.cfg.MaxBatch {
		select {
		case p := <-g.queue:
			batch = append(batch, p)
			continue
		default:
		}
		if deadline == nil {
			break
		}
		select {
		case p := <-g.queue:
			batch = append(batch, p)
		case <-deadline:
			return batch
		case <-g.closing:
			deadline = nil // commit what we have, and the rest promptly
		}
	}
	return batch
}

// commitBatch commits the items of batch that were not withdrawn and answers
// each of their callers.
func (g *GroupCommitter[T]) commitBatch(batch []*pending[T]) {
	taken := batch[:0]
	for _, p := range batch {
		if p.state.CompareAndSwap(stateQueued, stateTaken) {
			taken = append(taken, p)
		}
	}
	if len(taken) == 0 {
		return
	}
	items := make([]T, len(taken))
	for i, p := range taken {
		items[i] = p.item
	}
	// The transaction must not be cut short by any one caller's ctx: the
	// callers are waiting for it regardless (see Do).
	start := time.Now()
	itemErrs, err := g.commit(context.Background(), items)
	g.cfg.Metrics.commit(len(items), time.Since(start), err)
	if err == nil && itemErrs != nil && len(itemErrs) != len(items) {
		// A backend bug. Failing items that may have committed is the safe
		// direction: the caller withholds what it meant to record.
		err = fmt.Errorf("group commit: %d results for %d items", len(itemErrs), len(items))
	}
	for i, p := range taken {
		switch {
		case err != nil:
			p.done <- err
		case itemErrs != nil:
			p.done <- itemErrs[i]
		default:
			p.done <- nil
		}
	}
}
