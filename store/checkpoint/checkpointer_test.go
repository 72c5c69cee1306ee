package checkpoint

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshca/meshca/store"
)

// fakeHead is a store.AuditHeadReader over a chain of events 1..head.Seq
// whose hashes are headAt(seq, epoch).Hash: the test grows the chain, and
// rewrites it by starting a new epoch.
type fakeHead struct {
	mu    sync.Mutex
	head  store.ChainHead
	epoch byte
	from  int64 // events from this seq on have the current epoch's hashes
}

var _ store.AuditHeadReader = (*fakeHead)(nil)

func (f *fakeHead) AuditHead(context.Context) (store.ChainHead, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.head, nil
}

func (f *fakeHead) AuditHashAt(_ context.Context, seq int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq < 1 || seq > f.head.Seq {
		return nil, store.ErrNotFound
	}
	return f.hashAt(seq), nil
}

func (f *fakeHead) hashAt(seq int64) []byte {
	if seq >= f.from {
		return headAt(seq, f.epoch).Hash
	}
	return headAt(seq, 0).Hash
}

func (f *fakeHead) set(seq int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.head = store.ChainHead{Seq: seq, Hash: f.hashAt(seq)}
}

// rewrite re-hashes the chain from seq on, as a consistent rewrite would.
func (f *fakeHead) rewrite(from int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	f.from = from
	f.head.Hash = f.hashAt(f.head.Seq)
}

func headAt(seq int64, epoch ...byte) store.ChainHead {
	h := sha256.Sum256(append(binary.BigEndian.AppendUint64(nil, uint64(seq)), epoch...))
	return store.ChainHead{Seq: seq, Hash: h[:]}
}

// checkpointSeqs returns the seqs of the checkpoint files in dir, in order,
// after verifying each with pub.
func checkpointSeqs(t *testing.T, dir string, c *checkpointer) []int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, e := range entries {
		if !fileName.MatchString(e.Name()) {
			continue
		}
		cp, err := ReadFile(filepath.Join(dir, e.Name()), c.cfg.Signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, cp.Head.Seq)
	}
	return seqs
}

func TestDecide(t *testing.T) {
	moved := headAt(5)
	moved.Hash = bytes.Repeat([]byte{1}, store.HashSize)
	for _, tt := range []struct {
		name       string
		last, head store.ChainHead
		want       decision
	}{
		{"empty chain", store.ChainHead{}, store.ChainHead{}, skip},
		{"first events", store.ChainHead{}, headAt(1), sign},
		{"unchanged", headAt(5), headAt(5), skip},
		{"forward", headAt(5), headAt(9), sign},
		{"back", headAt(5), headAt(4), regressed},
		{"emptied", headAt(5), store.ChainHead{}, regressed},
		{"same seq, other hash", headAt(5), moved, regressed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.last, tt.head); got != tt.want {
				t.Fatalf("decide = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestRunCheckpointsWhileEventsArrive runs the loop on a fake clock: one
// checkpoint per interval while the head moves, none while it does not, a
// final one on shutdown, and none for a head that went back.
func TestRunCheckpointsWhileEventsArrive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var logs bytes.Buffer
		head := &fakeHead{}
		c, err := newCheckpointer(checkpointerConfig{Head: head, Signer: newKey(t), Dir: dir, Name: "cluster/east", Keep: 3,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		step := func(seq int64, want ...int64) {
			t.Helper()
			if seq >= 0 {
				head.set(seq)
			}
			time.Sleep(defaultInterval)
			synctest.Wait()
			if got := checkpointSeqs(t, dir, c); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("checkpoints %v, want %v", got, want)
			}
		}
		synctest.Wait()
		step(-1)           // empty chain: nothing to sign
		step(3, 3)         // events arrived
		step(-1, 3)        // no events: no new checkpoint
		step(7, 3, 7)      // more events
		step(9, 3, 7, 9)   //
		step(12, 7, 9, 12) // Keep 3: the oldest goes
		step(10, 7, 9, 12) // the head went back: refused, logged
		if !strings.Contains(logs.String(), "audit checkpoint failed") || !strings.Contains(logs.String(), "not after the last checkpoint (seq 12") {
			t.Fatalf("a head that went back was not reported:\n%s", logs.String())
		}
		head.set(14)
		head.rewrite(11)
		step(-1, 7, 9, 12) // rewritten below the last checkpoint, then grown: refused, logged
		if !strings.Contains(logs.String(), "the event at the last checkpoint's seq 12 has hash") {
			t.Fatalf("a rewritten chain was not reported:\n%s", logs.String())
		}
		head.rewrite(13) // the attacker puts seq 12 back; the rest stays rewritten
		head.set(15)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got := checkpointSeqs(t, dir, c); fmt.Sprint(got) != fmt.Sprint([]int64{9, 12, 15}) {
			t.Fatalf("after shutdown: checkpoints %v, want the final one at 15", got)
		}
		latest, err := ReadFile(filepath.Join(dir, LatestFile), c.cfg.Signer.Public())
		if err != nil || latest.Head.Seq != 15 {
			t.Fatalf("latest: %+v, %v", latest, err)
		}
		pub, err := ReadPublicKey(filepath.Join(dir, PublicKeyFile))
		if err != nil || !c.cfg.Signer.Public().(*ecdsa.PublicKey).Equal(pub) {
			t.Fatalf("public key file: %v", err)
		}
	})
}

// TestNewResumesFromLatest restarts a checkpointer on the same directory:
// an unchanged head is not signed again.
func TestNewResumesFromLatest(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t)
	head := &fakeHead{}
	head.set(4)
	cfg := checkpointerConfig{Head: head, Signer: key, Dir: dir, Name: "root"}
	c, err := newCheckpointer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if path, err := c.Checkpoint(t.Context()); err != nil || path == "" {
		t.Fatalf("first checkpoint: %q, %v", path, err)
	}
	c, err = newCheckpointer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if path, err := c.Checkpoint(t.Context()); err != nil || path != "" {
		t.Fatalf("checkpoint of an unchanged head after a restart: %q, %v; want none", path, err)
	}
}
