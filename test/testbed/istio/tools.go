//go:build tools

// Package tools pins the test-bed pilot-agent (Istio's sidecar agent) in this
// module's go.mod so `go build` can build it reproducibly.
package tools

import (
	_ "istio.io/istio/pilot/cmd/pilot-agent"
)
