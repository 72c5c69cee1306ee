package agent

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meshca/meshca/internal/testkit"
)

// TestStreamLimits opens more Workload API and SDS streams and connections
// than the agent allows: those beyond the caps are refused
// (ResourceExhausted for streams, a closed connection for connections),
// logged once, and the agent keeps serving what it admitted and admits
// again once streams end.
func TestStreamLimits(t *testing.T) {
	tree := testkit.New(t, testkit.Options{Now: time.Now().Add(-time.Hour)})
	fi := newFakeIssuer(t, tree, false)
	ra := startAgentWith(t, fi.addr, fi.bundleFile, dummyToken(t), time.Hour, func(c *Config) {
		c.Limits = StreamLimits{MaxStreams: 3, MaxConnections: 2}
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dial := func() workload.SpiffeWorkloadAPIClient {
		conn, err := grpc.NewClient("unix://"+ra.cfg.WorkloadSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return workload.NewSpiffeWorkloadAPIClient(conn)
	}
	// open starts a stream on c and returns its cancel func once the first
	// response has arrived, or the stream's error.
	open := func(c workload.SpiffeWorkloadAPIClient) (context.CancelFunc, error) {
		sctx, scancel := context.WithCancel(ctx)
		stream, err := c.FetchX509SVID(withHeader(sctx), &workload.X509SVIDRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if err != nil {
			scancel()
			return nil, err
		}
		return scancel, nil
	}
	c1, c2 := dial(), dial()
	first, err := open(c1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []workload.SpiffeWorkloadAPIClient{c1, c2} {
		if _, err := open(c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := open(c2); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a fourth stream: %v, want ResourceExhausted", err)
	}
	// A unary call holds a stream too.
	if _, err := c2.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "a.b.c"}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a unary call beside three streams: %v, want ResourceExhausted", err)
	}
	ra.logs.waitFor(t, "stream limit reached", `"socket":"workload api"`, `"max_streams":3`)
	if _, err := open(dial()); status.Code(err) != codes.Unavailable {
		t.Errorf("a third connection: %v, want Unavailable", err)
	}
	ra.logs.waitFor(t, "connection limit reached", `"socket":"workload api"`, `"max_connections":2`)

	// One stream ends: a new one is admitted; the others were served all
	// along.
	first()
	ra.logs.waitFor(t, "accepting streams again", `"socket":"workload api"`)
	if _, err := open(c2); err != nil {
		t.Errorf("a stream after one ended: %v", err)
	}

	// SDS has its own budget, enforced the same way.
	e := envoy(t, ra.cfg.SDSSocket, "node")
	for range 3 {
		next(t, subscribe(t, e, ResourceDefault))
	}
	s, err := e.Subscribe(ctx, ResourceDefault)
	if err == nil {
		t.Cleanup(s.Close)
		_, err = s.Next(ctx)
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a fourth SDS stream: %v, want ResourceExhausted", err)
	}
	ra.logs.waitFor(t, "stream limit reached", `"socket":"sds"`)
	if err := ra.ready(); err != nil {
		t.Errorf("not ready: %v", err)
	}
}
