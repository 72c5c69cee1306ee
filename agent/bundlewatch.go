package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

// BundleStream is one open trust bundle watch.
type BundleStream interface {
	// Recv blocks until the next bundle arrives or the stream ends.
	Recv() (*meshcav1.WatchBundleResponse, error)
}

// bundleSource opens trust bundle watches. *Client is the real one.
type bundleSource interface {
	// WatchBundle opens a watch that first sends the current bundle unless
	// its sequence is knownSequence, then every newer one. The stream ends
	// when ctx is done.
	WatchBundle(ctx context.Context, knownSequence uint64) (BundleStream, error)
}

var _ bundleSource = (*Client)(nil)

// trustUpdater is what a bundleWatcher keeps up to date. *manager is the
// real one.
type trustUpdater interface {
	// TrustBundleSequence returns the sequence of the bundle held; 0 for
	// none.
	TrustBundleSequence() uint64
	// SetTrustBundle makes b the agent's trust, or fails with
	// errStaleBundle when b is older than the bundle held (a bundle of the
	// same sequence is applied: its CRLs may differ) and with
	// errUntrustedBundle when no trusted root vouches for what it adds. It
	// reports whether anything served changed.
	SetTrustBundle(b *trust.TrustBundle) (bool, error)
}

var _ trustUpdater = (*manager)(nil)

// bundleWatcherConfig configures a bundleWatcher.
type bundleWatcherConfig struct {
	// Source opens the watch on the issuer. Required.
	Source bundleSource
	// Updater receives every bundle. Required.
	Updater trustUpdater
	// Issuer names the issuer in logs; empty means not logged.
	Issuer string
	// RetryMin is the delay before the first reconnection after a watch
	// ends; zero means 1 s. It doubles with every failure in a row, up to
	// RetryMax, and is jittered (a random half of it is taken off).
	RetryMin time.Duration
	// RetryMax caps the reconnection delay; zero means 30 s (gRPC's
	// reconnection cap in Client).
	RetryMax time.Duration
	// Registerer receives bundleRejectedMetricName and
	// bundleUpdatesMetricName; nil means no metrics.
	Registerer prometheus.Registerer
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c bundleWatcherConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Source == nil:
		return errors.New("bundle watch: source is required")
	case c.Updater == nil:
		return errors.New("bundle watch: updater is required")
	case c.RetryMin < 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("bundle watch: retry delays %v..%v are not a range", c.RetryMin, c.RetryMax)
	}
	return nil
}

// bundleWatcher follows the trust bundle the issuer publishes
// (meshca.v1.BundleService/WatchBundle) and hands every new one to its
// trustUpdater. It reconnects with exponential backoff and jitter while the
// issuer is unreachable. An issuer without BundleService (a plain Istio CA)
// stops it for good: the agent then trusts the CA bundle file only.
type bundleWatcher struct {
	cfg bundleWatcherConfig
	// rejected and updates are nil without metrics.
	rejected, updates *prometheus.CounterVec
	// jitter returns a random duration in [0, d); rand by default.
	jitter func(d time.Duration) time.Duration
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c bundleWatcherConfig) withDefaults() bundleWatcherConfig {
	c.RetryMin = cmp.Or(c.RetryMin, time.Second)
	c.RetryMax = cmp.Or(c.RetryMax, reconnectBackoff.MaxDelay)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// newBundleWatcher returns a watcher; call Run to start it.
func newBundleWatcher(cfg bundleWatcherConfig) (*bundleWatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	w := &bundleWatcher{cfg: cfg, jitter: func(d time.Duration) time.Duration {
		if d <= 0 {
			return 0
		}
		return rand.N(d)
	}}
	if cfg.Registerer != nil {
		var err error
		w.rejected, err = registerCounterVec(cfg.Registerer, bundleRejectedMetricName,
			"Trust bundles received from the issuer and refused, by reason.", "reason", bundleRejectReasons...)
		if err != nil {
			return nil, fmt.Errorf("bundle watch: %w", err)
		}
		w.updates, err = registerCounterVec(cfg.Registerer, bundleUpdatesMetricName,
			"Trust bundles received from the issuer by result: ok (applied), error (refused; see "+bundleRejectedMetricName+").",
			"result", resultOK, resultError)
		if err != nil {
			return nil, fmt.Errorf("bundle watch: %w", err)
		}
	}
	return w, nil
}

// bundleRejectedMetricName counts the trust bundles the agent refused
// whole, by reason: malformed (does not decode), stale (older sequence
// than the bundle held), untrusted (not vouched for by a trusted root),
// crl_rollback (an older CRL than one accepted), crl_conflict (another CRL
// under an accepted CRL number), crl_dropped (a current CRL left out) or
// error (could not be applied). A refused bundle changes nothing.
const bundleRejectedMetricName = "meshca_agent_bundle_rejected_total"

// Reasons of bundleRejectedMetricName.
const (
	bundleMalformed   = "malformed"
	bundleStale       = "stale"
	bundleUntrusted   = "untrusted"
	bundleCRLRollback = "crl_rollback"
	bundleCRLConflict = "crl_conflict"
	bundleCRLDropped  = "crl_dropped"
	bundleError       = "error"
)

var bundleRejectReasons = []string{bundleMalformed, bundleStale, bundleUntrusted, bundleCRLRollback, bundleCRLConflict, bundleCRLDropped, bundleError}

// rejectReason maps a SetTrustBundle error to a metric reason and a log
// level: an untrusted bundle or one that could not be applied is an error,
// the rest warnings.
func rejectReason(err error) (string, slog.Level) {
	switch {
	case errors.Is(err, errStaleBundle):
		return bundleStale, slog.LevelWarn
	case errors.Is(err, errUntrustedBundle):
		return bundleUntrusted, slog.LevelError
	case errors.Is(err, errCRLRollback):
		return bundleCRLRollback, slog.LevelWarn
	case errors.Is(err, errCRLConflict):
		return bundleCRLConflict, slog.LevelWarn
	case errors.Is(err, errCRLDropped):
		return bundleCRLDropped, slog.LevelWarn
	}
	return bundleError, slog.LevelError
}

func (w *bundleWatcher) reject(reason string) {
	if w.rejected != nil {
		w.rejected.WithLabelValues(reason).Inc()
		w.updates.WithLabelValues(resultError).Inc()
	}
}

// Run watches until ctx is cancelled (it then returns nil) or the issuer
// turns out not to implement BundleService (it logs that once and returns
// nil). It never fails: errors are logged and retried.
func (w *bundleWatcher) Run(ctx context.Context) error {
	failures := 0
	for {
		start := time.Now()
		received, err := w.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if status.Code(err) == codes.Unimplemented {
			w.log(slog.LevelInfo, "the issuer does not publish trust bundles; trusting the CA bundle file only", "error", err.Error())
			return nil
		}
		// A stream that lasted worked, even if it brought nothing new:
		// the issuer ends every connection after a maximum age.
		lasted := time.Since(start) >= w.cfg.RetryMax
		if received || lasted {
			failures = 0
		}
		delay := retryDelay(failures, w.cfg.RetryMin, w.cfg.RetryMax, w.jitter)
		failures++
		level := slog.LevelWarn
		if received || lasted {
			// A stream that worked and ended (the issuer restarted, or the
			// connection was replaced for new roots) is routine.
			level = slog.LevelDebug
		}
		w.log(level, "trust bundle watch ended; reconnecting", "error", errString(err), "retry_in", delay.String(), "failures", failures)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// watch runs one stream until it ends, and reports whether it delivered
// anything and why it ended.
func (w *bundleWatcher) watch(ctx context.Context) (received bool, _ error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // releases the stream
	stream, err := w.cfg.Source.WatchBundle(ctx, w.cfg.Updater.TrustBundleSequence())
	if err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return received, err
		}
		received = true
		w.apply(resp.GetBundle())
	}
}

// apply decodes pb and hands it to the updater. A bundle that is malformed,
// older than the one held or refused is logged and counted
// (bundleRejectedMetricName) and dropped: the agent keeps the bundle, CRLs
// and certificate it has.
func (w *bundleWatcher) apply(pb *meshcav1.Bundle) {
	b, err := trust.TrustBundleFromProto(pb)
	if err != nil {
		w.reject(bundleMalformed)
		w.log(slog.LevelWarn, "trust bundle rejected; keeping the current one", "sequence", pb.GetSequence(),
			"reason", bundleMalformed, "error", err.Error())
		return
	}
	if _, err = w.cfg.Updater.SetTrustBundle(b); err == nil {
		if w.updates != nil {
			w.updates.WithLabelValues(resultOK).Inc()
		}
		return
	}
	// An untrusted bundle comes from a compromised or misconfigured issuer,
	// or reaches an agent that missed a root rotation (its CA bundle file
	// needs the new root); CRLs going backwards, from an issuer relaying an
	// old or stripped copy.
	reason, level := rejectReason(err)
	w.reject(reason)
	w.log(level, "trust bundle rejected; keeping the current one", "sequence", b.Sequence, "reason", reason, "error", err.Error())
}

func (w *bundleWatcher) log(level slog.Level, msg string, attrs ...any) {
	if w.cfg.Issuer != "" {
		attrs = append(attrs, "issuer", w.cfg.Issuer)
	}
	w.cfg.Logger.Log(context.Background(), level, msg, attrs...)
}

// retryDelay is the wait before reconnecting after failures failed attempts
// in a row: lo doubled that many times, capped at hi, less a random part
// of up to half of it (so that agents restarted together do not reconnect
// together).
func retryDelay(failures int, lo, hi time.Duration, jitter func(time.Duration) time.Duration) time.Duration {
	d := lo
	for range failures {
		if d >= hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	d = min(d, hi)
	return d - jitter(d/2)
}

func errString(err error) string {
	if err == nil {
		return "stream ended"
	}
	return err.Error()
}
