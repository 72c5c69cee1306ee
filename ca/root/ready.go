package root

import (
	"context"
	"errors"

	"github.com/meshca/meshca/internal/ops"
)

// pinger is an optional capability of a Store: a cheap round trip. Without
// it, readiness reads the roots.
type pinger interface {
	Ping(ctx context.Context) error
}

// Checks are the root's readiness conditions, in order:
//
//   - "store": the store answers ("store: unreachable"; the cause goes to the log);
//   - "ca": a root may sign now ("ca: no active root", "ca: expired" when
//     the active root's NotAfter has passed).
//
// The ops listener's /readyz, the meshca_ready gauge and Serve's gRPC
// health service all follow them.
func (r *Root) Checks() ops.Checks {
	return ops.Checks{
		{Name: "store", Ready: r.storeReady},
		{Name: "ca", Ready: func(context.Context) error { return r.caReady() }},
	}
}

func (r *Root) storeReady(ctx context.Context) error {
	var err error
	if p, ok := r.cfg.Store.(pinger); ok {
		err = p.Ping(ctx)
	} else {
		_, err = r.cfg.Store.Roots(ctx)
	}
	if err != nil {
		return ops.Hide("unreachable", err)
	}
	return nil
}

func (r *Root) caReady() error {
	st := r.state.Load()
	if st == nil || st.active == nil {
		return errors.New("no active root")
	}
	if !r.cfg.Now().Before(st.active.Certificate.NotAfter) {
		return errors.New("expired")
	}
	return nil
}
