package sqlq

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshca/meshca/store"
)

func TestCertificatesQueryNumbersArguments(t *testing.T) {
	at := time.Unix(100, 500)
	f := store.CertificateFilter{SPIFFEID: "spiffe://td/a", Cluster: "c", ActiveAt: at, Limit: 3}
	for _, tc := range []struct {
		name string
		ph   Placeholder
		want string
	}{
		{"postgres", Dollar, `SELECT ` + CertColumns + ` FROM certificates WHERE spiffe_id = $1 AND cluster = $2 AND not_before <= $3 AND not_after >= $4 ORDER BY not_before DESC, serial ASC LIMIT $5`},
		{"sqlite", Question, `SELECT ` + CertColumns + ` FROM certificates WHERE spiffe_id = ? AND cluster = ? AND not_before <= ? AND not_after >= ? ORDER BY not_before DESC, serial ASC LIMIT ?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, args := CertificatesQuery(f, tc.ph)
			if q != tc.want {
				t.Errorf("query\n %s\nwant\n %s", q, tc.want)
			}
			// ActiveAt is fractional: not_before against its floor, not_after its ceiling.
			if want := []any{"spiffe://td/a", "c", int64(100), int64(101), 3}; !slices.Equal(args, want) {
				t.Errorf("args %v, want %v", args, want)
			}
		})
	}
}

func TestQueriesWithoutFilter(t *testing.T) {
	if q, args := IntermediatesQuery(store.IntermediateFilter{}, Dollar); q != `SELECT `+IntermediateColumns+` FROM intermediates ORDER BY not_before ASC, serial ASC` || len(args) != 0 {
		t.Errorf("intermediates: %q %v", q, args)
	}
	if q, args := EventsQuery(time.Time{}, Question); q != `SELECT `+EventColumns+` FROM audit_events ORDER BY seq` || len(args) != 0 {
		t.Errorf("events: %q %v", q, args)
	}
	if q, args := EventsQuery(time.Unix(7, 1), Dollar); q != `SELECT `+EventColumns+` FROM audit_events WHERE time >= $1 ORDER BY seq` || !slices.Equal(args, []any{int64(8)}) {
		t.Errorf("events since: %q %v", q, args)
	}
}

func TestPruneRunsChunksUntilOneIsShort(t *testing.T) {
	errDown := errors.New("down")
	for _, tc := range []struct {
		name      string
		chunks    []int64
		failAt    int // chunk index that fails, -1 for none
		wantTotal int64
		wantCalls int
	}{
		{"one short chunk", []int64{3}, -1, 3, 1},
		{"full chunks then short", []int64{PruneChunk, PruneChunk, 0}, -1, 2 * PruneChunk, 3},
		{"fails part way", []int64{PruneChunk, PruneChunk}, 1, PruneChunk, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			total, err := Prune(t.Context(), time.Unix(10, 1), func(_ context.Context, cutoff, limit int64) (int64, error) {
				if cutoff != 11 || limit != PruneChunk {
					t.Errorf("chunk(cutoff %d, limit %d), want (11, %d)", cutoff, limit, PruneChunk)
				}
				calls++
				if calls-1 == tc.failAt {
					return 0, errDown
				}
				return tc.chunks[calls-1], nil
			})
			if total != tc.wantTotal || calls != tc.wantCalls {
				t.Errorf("total %d after %d chunks, want %d after %d", total, calls, tc.wantTotal, tc.wantCalls)
			}
			if (tc.failAt >= 0) != errors.Is(err, errDown) {
				t.Errorf("err = %v", err)
			}
		})
	}
}
