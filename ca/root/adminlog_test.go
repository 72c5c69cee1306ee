package root

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
)

// TestAdminServiceLogsWritesAndReadsAlike: a refused write (answered by the
// root) and a refused read (answered by adminapi.Reads) log the same event
// with the method, the code, the reason and the actor.
func TestAdminServiceLogsWritesAndReadsAlike(t *testing.T) {
	h := newHarness(t, nil)
	s := newAdminService(h.root)
	ctx := context.Background()
	_, writeErr := s.Unrevoke(ctx, &meshcav1.UnrevokeRequest{})
	_, readErr := s.ListAuditEvents(ctx, &meshcav1.ListAuditEventsRequest{Limit: -1})
	for _, tc := range []struct {
		method string
		err    error
		code   codes.Code
	}{
		{"Unrevoke", writeErr, codes.FailedPrecondition},
		{"ListAuditEvents", readErr, codes.InvalidArgument},
	} {
		if got := status.Code(tc.err); got != tc.code {
			t.Errorf("%s: code %v, want %v", tc.method, got, tc.code)
		}
		var line string
		for l := range strings.Lines(h.logs.String()) {
			if strings.Contains(l, "method="+tc.method) {
				line = l
			}
		}
		for _, want := range []string{`msg="admin request failed"`, "code=" + tc.code.String(), "reason=", "actor=admin:unknown"} {
			if !strings.Contains(line, want) {
				t.Errorf("%s: log line %q lacks %s", tc.method, line, want)
			}
		}
	}
}
