package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeCommit records the batches it is given. When gate is non-nil, each
// commit first waits for a value from it, so a test can hold a transaction
// "in flight" while more items queue up.
type fakeCommit struct {
	gate chan struct{}
	// delay is how long each commit takes (fake time in a bubble).
	delay time.Duration
	// result, when set, decides the outcome of each batch.
	result func(batch []int) ([]error, error)

	mu      sync.Mutex
	batches [][]int
}

func (f *fakeCommit) commit(ctx context.Context, batch []int) ([]error, error) {
	if f.gate != nil {
		<-f.gate
	}
	time.Sleep(f.delay)
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(batch))
	f.mu.Unlock()
	if f.result != nil {
		return f.result(batch)
	}
	return nil, nil
}

func (f *fakeCommit) sizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s []int
	for _, b := range f.batches {
		s = append(s, len(b))
	}
	return s
}

func (f *fakeCommit) committed() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []int
	for _, b := range f.batches {
		all = append(all, b...)
	}
	slices.Sort(all)
	return all
}

// doAll starts one Do per item and returns a channel of their results, keyed
// by item.
// startCommitter starts a committer of ints that is closed when the test
// ends.
func startCommitter(t *testing.T, cfg GroupCommitConfig, commit func(context.Context, []int) ([]error, error)) *GroupCommitter[int] {
	t.Helper()
	g := NewGroupCommitter(cfg, commit)
	t.Cleanup(func() { g.Close() })
	return g
}

// wantCommitted fails t unless f committed exactly want, in order.
func wantCommitted(t *testing.T, f *fakeCommit, want []int) {
	t.Helper()
	if got := f.committed(); !slices.Equal(got, want) {
		t.Fatalf("committed %v, want %v", got, want)
	}
}

func doAll(ctx context.Context, g *GroupCommitter[int], items ...int) <-chan [2]any {
	out := make(chan [2]any, len(items))
	for _, it := range items {
		go func() { out <- [2]any{it, g.Do(ctx, it)} }()
	}
	return out
}

func results(t *testing.T, ch <-chan [2]any, n int) map[int]error {
	t.Helper()
	m := make(map[int]error, n)
	for range n {
		r := <-ch
		err, _ := r[1].(error)
		m[r[0].(int)] = err
	}
	return m
}

func TestGroupCommitSingle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{}
		g := startCommitter(t, GroupCommitConfig{}, f.commit)
		if err := g.Do(t.Context(), 7); err != nil {
			t.Fatalf("Do = %v", err)
		}
		wantCommitted(t, f, []int{7})
	})
}

// While one transaction is in flight, everything that queues up behind it is
// committed together in the next one.
func TestGroupCommitBatchesWhileCommitting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{gate: make(chan struct{})}
		g := startCommitter(t, GroupCommitConfig{}, f.commit)

		first := doAll(t.Context(), g, 0)
		synctest.Wait() // item 0 is in flight, blocked on the gate
		rest := doAll(t.Context(), g, 1, 2, 3, 4, 5, 6, 7, 8, 9)
		synctest.Wait() // all nine are queued
		f.gate <- struct{}{}
		f.gate <- struct{}{}
		for item, err := range results(t, first, 1) {
			if err != nil {
				t.Errorf("item %d: %v", item, err)
			}
		}
		for item, err := range results(t, rest, 9) {
			if err != nil {
				t.Errorf("item %d: %v", item, err)
			}
		}
		if got := f.sizes(); !slices.Equal(got, []int{1, 9}) {
			t.Fatalf("batch sizes %v, want [1 9]", got)
		}
	})
}

func TestGroupCommitMaxBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{gate: make(chan struct{})}
		g := startCommitter(t, GroupCommitConfig{MaxBatch: 4}, f.commit)

		ch := doAll(t.Context(), g, 0)
		synctest.Wait()
		ch2 := doAll(t.Context(), g, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
		synctest.Wait()
		close(f.gate)
		results(t, ch, 1)
		results(t, ch2, 10)
		if got := f.sizes(); !slices.Equal(got, []int{1, 4, 4, 2}) {
			t.Fatalf("batch sizes %v, want [1 4 4 2]", got)
		}
		if got := f.committed(); len(got) != 11 {
			t.Fatalf("committed %v, want 11 items", got)
		}
	})
}

func TestGroupCommitMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{gate: make(chan struct{})}
		g := startCommitter(t, GroupCommitConfig{MaxWait: 10 * time.Millisecond}, f.commit)

		// Idle: a lone item is committed at once.
		close(f.gate)
		start := time.Now()
		if err := g.Do(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("lone item on an idle store committed after %v, want at once", waited)
		}
		time.Sleep(time.Second) // fake time inside the bubble

		// Under load: item 1 is in flight while 2 to 5 queue up, so writes
		// arrive fast. The writer takes 2 to 5 and waits for more: 6
		// arrives 4ms later and joins the batch, committed when MaxWait
		// runs out.
		f.gate = make(chan struct{})
		ch := doAll(t.Context(), g, 1)
		synctest.Wait() // item 1 is in flight, blocked on the gate
		ch2 := doAll(t.Context(), g, 2, 3, 4, 5)
		synctest.Wait()
		close(f.gate)
		results(t, ch, 1)
		start = time.Now()
		time.Sleep(4 * time.Millisecond)
		ch3 := doAll(t.Context(), g, 6)
		results(t, ch2, 4)
		results(t, ch3, 1)
		if waited := time.Since(start); waited != 10*time.Millisecond {
			t.Fatalf("batch committed after %v, want MaxWait = 10ms", waited)
		}

		// Right after that batch of five the rate is still high, so a lone
		// item waits; a second later it is low, and a lone item does not.
		for _, tc := range []struct {
			pause, want time.Duration
		}{{0, 10 * time.Millisecond}, {time.Second, 0}} {
			time.Sleep(tc.pause)
			start = time.Now()
			if err := g.Do(t.Context(), 7); err != nil {
				t.Fatal(err)
			}
			if waited := time.Since(start); waited != tc.want {
				t.Fatalf("lone item after %v committed after %v, want %v", tc.pause, waited, tc.want)
			}
		}
		if got := f.sizes(); !slices.Equal(got, []int{1, 1, 5, 1, 1}) {
			t.Fatalf("batch sizes %v, want [1 1 5 1 1]", got)
		}
	})
}

// TestGroupCommitWindowStartsAtQueueing checks that the wait for a batch
// to fill counts from when its first item was queued: items that queued
// while the previous batch was committing have already waited, so none
// waits longer than MaxWait and its own commit.
func TestGroupCommitWindowStartsAtQueueing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxWait, commitTime = 20 * time.Millisecond, 5 * time.Millisecond
		f := &fakeCommit{delay: commitTime}
		g := startCommitter(t, GroupCommitConfig{MaxWait: maxWait}, f.commit)

		// Item 0 finds the store idle and commits at once, for 5ms; items 1
		// to 20 queue meanwhile, a rate that makes the writer wait for more.
		ch := doAll(t.Context(), g, 0)
		synctest.Wait()
		queued := time.Now()
		later := make([]int, 20)
		for i := range later {
			later[i] = i + 1
		}
		ch2 := doAll(t.Context(), g, later...)
		results(t, ch, 1)
		for item, err := range results(t, ch2, 20) {
			if err != nil {
				t.Fatalf("item %d: %v", item, err)
			}
		}
		if waited, want := time.Since(queued), maxWait+commitTime; waited != want {
			t.Fatalf("items queued during a commit were committed after %v, want MaxWait + one commit = %v", waited, want)
		}
		if got := f.sizes(); !slices.Equal(got, []int{1, 20}) {
			t.Fatalf("batch sizes %v, want [1 20]", got)
		}
	})
}

func TestGroupCommitNoWaitByDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := startCommitter(t, GroupCommitConfig{}, (&fakeCommit{}).commit)
		start := time.Now()
		if err := g.Do(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("Do took %v of fake time with MaxWait 0, want 0", waited)
		}
	})
}

// TestGroupCommitBatchErrors holds a first item's transaction open so that
// items 1, 2 and 3 queue into one batch, then checks the error each of them
// gets from the batch's outcome.
func TestGroupCommitBatchErrors(t *testing.T) {
	errDisk := errors.New("disk full")
	errDup := errors.New("duplicate")
	for _, tc := range []struct {
		name string
		// result is the backend's outcome for a batch of items > 0.
		result func(batch []int) ([]error, error)
		want   map[int]error
	}{{
		name:   "an error fails the whole batch",
		result: func([]int) ([]error, error) { return nil, errDisk },
		want:   map[int]error{1: errDisk, 2: errDisk, 3: errDisk},
	}, {
		name: "item errors stay with their item",
		result: func(batch []int) ([]error, error) {
			errs := make([]error, len(batch))
			for i, it := range batch {
				if it == 2 {
					errs[i] = errDup
				}
			}
			return errs, nil
		},
		want: map[int]error{1: nil, 2: errDup, 3: nil},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeCommit{gate: make(chan struct{})}
				f.result = func(batch []int) ([]error, error) {
					if batch[0] == 0 {
						return nil, nil
					}
					return tc.result(batch)
				}
				g := startCommitter(t, GroupCommitConfig{}, f.commit)

				ch := doAll(t.Context(), g, 0)
				synctest.Wait()
				ch2 := doAll(t.Context(), g, 1, 2, 3)
				synctest.Wait()
				close(f.gate)
				if err := results(t, ch, 1)[0]; err != nil {
					t.Fatalf("item 0: %v", err)
				}
				for item, err := range results(t, ch2, 3) {
					if want := tc.want[item]; !errors.Is(err, want) {
						t.Errorf("item %d: err = %v, want %v", item, err, want)
					}
				}
				if got := f.sizes(); !slices.Equal(got, []int{1, 3}) {
					t.Fatalf("batch sizes %v, want [1 3]: every item shares the batch", got)
				}
			})
		})
	}
}

func TestGroupCommitMismatchedItemErrorsFailAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{result: func([]int) ([]error, error) { return []error{nil, nil, nil}, nil }}
		g := startCommitter(t, GroupCommitConfig{}, f.commit)
		if err := g.Do(t.Context(), 1); err == nil {
			t.Fatal("Do = nil although the backend answered for 3 items out of 1")
		}
	})
}

func TestGroupCommitCancelWhileQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{gate: make(chan struct{})}
		g := startCommitter(t, GroupCommitConfig{}, f.commit)

		first := doAll(t.Context(), g, 0)
		synctest.Wait()
		ctx, cancel := context.WithCancel(t.Context())
		queued := doAll(ctx, g, 1)
		synctest.Wait()
		cancel()
		// Do returns while the transaction ahead of it is still blocked.
		if err := results(t, queued, 1)[1]; !errors.Is(err, context.Canceled) {
			t.Fatalf("queued item after cancel: err = %v, want context.Canceled", err)
		}
		close(f.gate)
		results(t, first, 1)
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
		wantCommitted(t, f, []int{0}) // a withdrawn item must never commit
	})
}

func TestGroupCommitCancelInFlightWaitsForOutcome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{gate: make(chan struct{})}
		g := startCommitter(t, GroupCommitConfig{}, f.commit)

		ctx, cancel := context.WithCancel(t.Context())
		ch := doAll(ctx, g, 1)
		synctest.Wait() // item 1 is in its transaction
		cancel()
		synctest.Wait()
		select {
		case r := <-ch:
			t.Fatalf("Do returned %v while its transaction was still running", r[1])
		default:
		}
		close(f.gate)
		if err := results(t, ch, 1)[1]; err != nil {
			t.Fatalf("Do = %v, want nil: the item committed", err)
		}
	})
}

func TestGroupCommitCanceledBeforeDo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{}
		g := NewGroupCommitter(GroupCommitConfig{}, f.commit)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := g.Do(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Fatalf("Do = %v, want context.Canceled", err)
		}
		g.Close()
		if got := f.committed(); len(got) != 0 {
			t.Fatalf("committed %v, want nothing", got)
		}
	})
}

func TestGroupCommitCloseFlushesQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommit{gate: make(chan struct{})}
		// MaxBatch 1 also makes the queue hold a single item, so item 2
		// below cannot even be queued before Close.
		g := NewGroupCommitter(GroupCommitConfig{MaxBatch: 1}, f.commit)

		inFlight := doAll(t.Context(), g, 0)
		synctest.Wait()
		queued := doAll(t.Context(), g, 1)
		synctest.Wait()
		blocked := doAll(t.Context(), g, 2)
		synctest.Wait()

		closed := make(chan error)
		go func() { closed <- g.Close() }()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned before the queued items were committed")
		default:
		}
		if err := results(t, blocked, 1)[2]; !errors.Is(err, ErrClosed) {
			t.Fatalf("item waiting for queue space at Close: err = %v, want ErrClosed", err)
		}
		if err := g.Do(t.Context(), 99); !errors.Is(err, ErrClosed) {
			t.Fatalf("Do after Close = %v, want ErrClosed", err)
		}
		close(f.gate)
		if err := <-closed; err != nil {
			t.Fatalf("Close = %v", err)
		}
		for _, ch := range []<-chan [2]any{inFlight, queued} {
			for item, err := range results(t, ch, 1) {
				if err != nil {
					t.Errorf("item %d queued before Close: %v", item, err)
				}
			}
		}
		wantCommitted(t, f, []int{0, 1})
		if err := g.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		// synctest.Test fails if the writer goroutine is still running here.
	})
}

// Under real concurrency (no gate, no fake time), every item commits exactly
// once and the CommitFunc never runs concurrently with itself.
func TestGroupCommitConcurrentStress(t *testing.T) {
	const n = 500
	var running atomic.Int32
	f := &fakeCommit{}
	f.result = func([]int) ([]error, error) {
		if running.Add(1) != 1 {
			return nil, fmt.Errorf("concurrent commit")
		}
		defer running.Add(-1)
		runtime.Gosched()
		return nil, nil
	}
	g := NewGroupCommitter(GroupCommitConfig{}, f.commit)
	t.Cleanup(func() { g.Close() })
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	for item, err := range results(t, doAll(t.Context(), g, items...), n) {
		if err != nil {
			t.Fatalf("item %d: %v", item, err)
		}
	}
	if got := f.committed(); !slices.Equal(got, items) {
		t.Fatalf("committed %d items, want each of %d exactly once", len(got), n)
	}
}
