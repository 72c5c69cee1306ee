package ops

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// FollowInterval is how often Follow re-evaluates readiness.
const FollowInterval = 5 * time.Second

// Follow sets the overall status ("") of hs from checks every interval
// (zero means FollowInterval): SERVING while ready, NOT_SERVING otherwise,
// logging each change with its reason. When ctx ends it sets NOT_SERVING
// for good (the process drains) and returns.
func Follow(ctx context.Context, hs *health.Server, checks Checks, interval time.Duration, log *slog.Logger) {
	if interval <= 0 {
		interval = FollowInterval
	}
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		err := checks.Ready(ctx)
		if ctx.Err() != nil {
			hs.Shutdown()
			return
		}
		st := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if st != last {
			if err != nil {
				log.WarnContext(ctx, "not ready", "reason", err.Error())
			} else if last != healthpb.HealthCheckResponse_UNKNOWN {
				log.InfoContext(ctx, "ready again")
			}
			hs.SetServingStatus("", st)
			last = st
		}
		select {
		case <-ctx.Done():
			hs.Shutdown()
			return
		case <-t.C:
		}
	}
}
