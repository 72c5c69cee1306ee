package agent

import (
	"context"

	"github.com/meshca/meshca/internal/ops"
)

// checks is the agent's readiness: "certificate" holds while m serves a
// valid certificate; otherwise it says "none yet" or which certificate
// expired when, and how the last renewal attempt ended. The health
// listener's /readyz and the meshca_ready{component="agent"} gauge follow
// it.
func (m *manager) checks() ops.Checks {
	return ops.Checks{{Name: "certificate", Ready: func(context.Context) error { return m.Ready() }}}
}
