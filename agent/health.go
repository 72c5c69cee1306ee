package agent

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// healthHandler serves GET /healthz (200 while the process serves HTTP at
// all) and GET /readyz (200 while m holds a valid certificate; 503 with the
// reason otherwise). Bodies are one line of text.
func healthHandler(m *manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := m.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		snap, _ := m.cfg.Publisher.Current()
		fmt.Fprintf(w, "ready: %s valid until %s\n", snap.ID(), snap.NotAfter().UTC().Format(time.RFC3339))
	})
	return mux
}

// healthAndMetrics is healthHandler plus GET /metrics from g; without g it
// is healthHandler.
func healthAndMetrics(m *manager, g prometheus.Gatherer) http.Handler {
	health := healthHandler(m)
	if g == nil {
		return health
	}
	mux := http.NewServeMux()
	mux.Handle("/", health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}
