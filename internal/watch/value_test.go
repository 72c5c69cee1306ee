package watch_test

import (
	"sync"
	"testing"
	"testing/synctest"

	"github.com/meshca/meshca/internal/watch"
)

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestZeroValueHoldsZeroAndWakesOnFirstStore(t *testing.T) {
	var v watch.Value[*int]
	got, changed := v.Load()
	if got != nil {
		t.Fatalf("zero Value holds %v, want nil", got)
	}
	if closed(changed) {
		t.Fatal("changed closed before any Store")
	}
	n := 1
	v.Store(&n)
	if !closed(changed) {
		t.Fatal("Store did not close the channel Load returned")
	}
	if got, _ := v.Load(); got != &n {
		t.Fatalf("Load after Store = %v, want %v", got, &n)
	}
}

func TestStoreWakesEveryWaiterOnceWithTheNewValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := watch.New("a")
		const waiters = 50
		got := make(chan string, waiters)
		for range waiters {
			go func() {
				_, changed := v.Load()
				<-changed
				s, _ := v.Load()
				got <- s
			}()
		}
		synctest.Wait() // every waiter blocks on the same channel
		v.Store("b")
		for range waiters {
			if s := <-got; s != "b" {
				t.Errorf("waiter woke to %q, want b", s)
			}
		}
		if _, changed := v.Load(); closed(changed) {
			t.Error("the new value's channel is already closed")
		}
	})
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name        string
		f           func(int) (int, bool)
		wantChanged bool
		want        int
	}{
		{"change", func(old int) (int, bool) { return old + 1, true }, true, 2},
		{"no change keeps waiters waiting", func(old int) (int, bool) { return old + 1, false }, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := watch.New(1)
			_, changed := v.Load()
			if got := v.Update(tc.f); got != tc.wantChanged {
				t.Errorf("Update = %v, want %v", got, tc.wantChanged)
			}
			if closed(changed) != tc.wantChanged {
				t.Errorf("channel closed = %v, want %v", closed(changed), tc.wantChanged)
			}
			if got, _ := v.Load(); got != tc.want {
				t.Errorf("value = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestConcurrentUpdatesLoseNothing runs under -race: Update is a
// read-modify-write, so no increment may be lost, and a reader that saw a
// value always sees its channel closed once a later one is stored.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	var v watch.Value[int]
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				v.Update(func(old int) (int, bool) { return old + 1, true })
			}
		})
	}
	wg.Go(func() {
		for range each {
			n, changed := v.Load()
			if n < writers*each {
				<-changed
				if m, _ := v.Load(); m <= n {
					t.Errorf("woken at %d, value still %d", n, m)
				}
			}
		}
	})
	wg.Wait()
	if got, _ := v.Load(); got != writers*each {
		t.Fatalf("value = %d, want %d", got, writers*each)
	}
}
