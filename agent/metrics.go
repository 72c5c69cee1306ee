package agent

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// registerCounterVec registers a counter named name with one label,
// "reason", on reg and exports a zero for each of reasons, so that alerts
// see the series before the first event. A counter registered before under
// that name (another agent in the process) is shared.
func registerCounterVec(reg prometheus.Registerer, name, help string, reasons ...string) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"reason"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("register %s: %w", name, err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("register %s: registered as %T", name, are.ExistingCollector)
		}
		c = existing
	}
	for _, r := range reasons {
		c.WithLabelValues(r)
	}
	return c, nil
}
