package root

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// TestRotateRootWhileInProgress asks for a second root rotation while the
// first is under way, over the admin socket: refused, naming the root that
// keeps the rotation open, while the new root is prepared and while the old
// one is retiring; accepted with force (and audited as forced); accepted
// again once the bundle holds the active root alone.
func TestRotateRootWhileInProgress(t *testing.T) {
	h := newHarness(t, nil)
	addr := h.serve()
	if _, err := enroll(t, h.dial(addr, nil), h.addCluster("east", "east.example")); err != nil {
		t.Fatal(err) // an intermediate under the first root keeps it retiring
	}
	client := h.adminClient()
	bg := context.Background()
	rotate := func(force bool) (*meshcav1.RotateRootResponse, error) {
		return client.RotateRoot(bg, &meshcav1.RotateRootRequest{Force: force})
	}
	refused := func(phase, want string) {
		t.Helper()
		before := len(h.root.Roots())
		_, err := rotate(false)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "rotation is in progress") ||
			!strings.Contains(status.Convert(err).Message(), want) {
			t.Fatalf("%s: second rotation = %v, want FailedPrecondition saying a rotation is in progress (%s)", phase, err, want)
		}
		if n := len(h.root.Roots()); n != before {
			t.Fatalf("%s: a refused rotation left %d roots, want %d", phase, n, before)
		}
	}

	first, err := rotate(false)
	if err != nil {
		t.Fatalf("first rotation: %v", err)
	}
	refused("new root prepared", first.GetRoot().GetSha256()+" is prepared")

	h.clock.Advance(h.cfg.PropagationDelay + time.Second)
	h.refresh()
	wantStates(t, h, RootRetiring, RootActive)
	refused("old root retiring", fingerprintHex(h.root.Roots()[0].Cert)+" is retiring")

	forced, err := rotate(true)
	if err != nil {
		t.Fatalf("forced rotation: %v", err)
	}
	wantStates(t, h, RootRetiring, RootActive, RootPrepared)
	ev := h.events("root.create")
	if last := ev[len(ev)-1]; !strings.Contains(last.Detail, forced.GetRoot().GetSha256()) || !strings.Contains(last.Detail, "forced while root") {
		t.Fatalf("audit of the forced rotation: %q", last.Detail)
	}

	// The last intermediate under the first root expires and the forced
	// root activates: nothing but the active root is left in the bundle.
	h.clock.Advance(h.cfg.IntermediateTTL)
	h.refresh()
	for _, s := range h.root.Roots()[:2] {
		if s.State != RootRetired {
			t.Fatalf("root states %v: want the first two retired", states(h.root.Roots()))
		}
	}
	if _, err := rotate(false); err != nil {
		t.Fatalf("rotation after the last one completed: %v", err)
	}
}

func TestRotationInProgress(t *testing.T) {
	for _, tc := range []struct {
		name   string
		states []RootState
		want   int // index of the root named, -1 for none
	}{
		{"active alone", []RootState{RootActive}, -1},
		{"retired and active", []RootState{RootRetired, RootActive}, -1},
		{"active and prepared", []RootState{RootActive, RootPrepared}, 1},
		{"retiring and active", []RootState{RootRetiring, RootActive}, 0},
		{"prepared only", []RootState{RootPrepared}, 0},
		{"all retired", []RootState{RootRetired, RootRetired}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roots := make([]RootStatus, len(tc.states))
			for i, st := range tc.states {
				roots[i] = RootStatus{RootRecord: RootRecord{KeyRef: string(rune('a' + i))}, State: st}
			}
			got, ok := rotationInProgress(roots)
			switch {
			case tc.want < 0 && ok:
				t.Fatalf("in progress because of %+v, want not in progress", got)
			case tc.want >= 0 && (!ok || got.KeyRef != roots[tc.want].KeyRef):
				t.Fatalf("= %+v, %v; want root %d", got, ok, tc.want)
			}
		})
	}
}
