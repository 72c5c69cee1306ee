package issuer

import (
	"context"
	"log/slog"

	"github.com/google/renameio/v2"
)

// FollowBundleFile rewrites path (PEM) with meshca's own CAs of src's
// bundle (TrustBundle.OwnAuthorities: its own roots, or under an upstream
// PKI the CAs it issued meshca, never the upstream's root) whenever they
// change, so that clients bootstrapping from the file get current roots. A failed write is logged and tried again at the next
// change. It returns nil when ctx ends.
func FollowBundleFile(ctx context.Context, src BundleSource, path string, log *slog.Logger) error {
	var last string
	for {
		b, changed := src.Current()
		if b != nil {
			if own := b.OwnAuthorities(); own != nil && string(own.PEM()) != last {
				if err := renameio.WriteFile(path, own.PEM(), 0o644); err != nil {
					log.Error("writing bundle.pem failed", "error", err)
				} else {
					last = string(own.PEM())
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
