package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/meshca/meshca/internal/ops"
	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/store"
)

// caMetricsInterval is how often the CA expiry and CRL gauges are
// refreshed: they change at rotations, which are hours apart.
const caMetricsInterval = 30 * time.Second

// Readiness failures, as /readyz and the gRPC health service report them
// (prefixed with the check's name).
var (
	errNoIntermediate = errors.New("no valid intermediate")
	errCAExpired      = errors.New("expired")
	errNotEnrolled    = errors.New("not enrolled")
)

// newRegistry returns the registry of the stack's metrics with the Go and
// process collectors, or nil (no metrics) without a metrics listener.
func (c Config) newRegistry() (*prometheus.Registry, error) {
	if c.MetricsListen == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return reg, nil
}

// registerer is reg as a Registerer, nil (not a nil *Registry) without one.
func registerer(reg *prometheus.Registry) prometheus.Registerer {
	if reg == nil {
		return nil
	}
	return reg
}

// readiness are the stack's readiness checks, in the order /readyz reports
// them: the store answers, the CA (some root of the bundle) has not
// expired, a valid intermediate is held and, with a central root, the
// issuer is enrolled. now is the clock they are judged at.
func (p *parts) readiness(db Store, m *store.Metrics, up *issuer.Upstream, now func() time.Time) ops.Checks {
	checks := ops.Checks{
		{Name: "store", Ready: func(ctx context.Context) error {
			if err := m.Probe(ctx, db); err != nil {
				return ops.Hide("unreachable", err)
			}
			return nil
		}},
		{Name: "ca", Ready: func(context.Context) error {
			t := now()
			for _, r := range p.iss.Bundle().Roots() {
				if t.Before(r.NotAfter) {
					return nil
				}
			}
			return errCAExpired
		}},
		{Name: "intermediate", Ready: func(context.Context) error {
			a := p.iss.Authority()
			if t := now(); a == nil || t.Before(a.Certificate.NotBefore) || !t.Before(a.Certificate.NotAfter) {
				return errNoIntermediate
			}
			return nil
		}},
	}
	if up != nil {
		checks = append(checks, ops.Check{Name: "upstream", Ready: func(context.Context) error {
			if c := up.Credential(); c == nil || !now().Before(c.NotAfter) {
				return errNotEnrolled
			}
			return nil
		}})
	}
	return checks
}

// caState is what the CA metrics export now, and a channel closed when the
// CRLs change.
func (p *parts) caState(up *issuer.Upstream, now time.Time) (issuer.CAState, <-chan struct{}) {
	st := issuer.CAState{Held: p.iss.Held(now), Roots: p.iss.Bundle().Roots()}
	crls, changed := p.crls.Current()
	st.CRLs = crls
	if up != nil {
		st.Credential = up.Credential()
	}
	return st, changed
}

// runCAMetrics refreshes m from the stack's state now, whenever the CRLs
// change and every caMetricsInterval (rotations) until ctx ends.
func (p *parts) runCAMetrics(ctx context.Context, m *issuer.CAMetrics, up *issuer.Upstream) error {
	t := time.NewTicker(caMetricsInterval)
	defer t.Stop()
	for {
		st, changed := p.caState(up, time.Now())
		m.Set(st)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

// opsRunner returns what serves the stack's operations until ctx ends: the
// gRPC health service following checks (NOT_SERVING once ctx ends, the
// issuer's server turning it so before its graceful stop too), and, with
// a registry, the CA metrics and the operations listener.
func (c Config) opsRunner(p *parts, reg *prometheus.Registry, checks ops.Checks, up *issuer.Upstream, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			ops.Follow(gctx, p.srv.Health(), checks, 0, log)
			return nil
		})
		if reg != nil {
			g.Go(func() error { return p.runCAMetrics(gctx, p.ca, up) })
			g.Go(func() error {
				return ops.Run(gctx, ops.Config{Listen: c.MetricsListen, ReusePort: c.ReusePort, Gatherer: reg, Checks: checks, Logger: log}, c.MetricsServing)
			})
		}
		return g.Wait()
	}
}
