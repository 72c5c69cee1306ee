package issuer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/ca/root/roottest"
	"github.com/meshca/meshca/issuer"
)

// FirstIntermediate waits out a root that is down, then enrols once it is
// back; a refused token is final at once.
func TestFirstIntermediateRetriesUntilTheRootAnswers(t *testing.T) {
	r := roottest.New(t)
	token := r.AddCluster("east", "cluster.local")
	r.Stop()
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), token, log))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := up.FirstIntermediate(ctx)
		done <- err
	}()
	for strings.Count(logs.String(), "cannot reach the root to obtain an intermediate; retrying") < 2 {
		select {
		case err := <-done:
			t.Fatalf("FirstIntermediate returned %v while the root was down", err)
		case <-ctx.Done():
			t.Fatal("no retries logged")
		case <-time.After(10 * time.Millisecond):
		}
	}
	r.Serve()
	if err := <-done; err != nil {
		t.Fatalf("FirstIntermediate after the root came back: %v", err)
	}
	if enrolls, _, _ := r.Counts(); enrolls != 1 {
		t.Errorf("enrolments = %d, want 1", enrolls)
	}
}

func TestFirstIntermediateRefusalIsFinal(t *testing.T) {
	r := roottest.New(t)
	r.AddCluster("east", "cluster.local")
	log, logs := captureLogs(t)
	up := mustUpstream(t, upstreamConfig(r, t.TempDir(), "not-the-token", log))
	_, _, err := up.FirstIntermediate(t.Context())
	if !errors.Is(err, issuer.ErrRejected) {
		t.Fatalf("err = %v, want ErrRejected", err)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("a refusal was retried:\n%s", logs)
	}
}
