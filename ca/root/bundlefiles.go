package root

import (
	"context"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/trust"
)

// bundleFilesPoll is how often WriteBundleFiles looks at the roots'
// states besides when the bundle changes.
const bundleFilesPoll = 5 * time.Second

// bundleRoots are the roots that belong in the bundle files: those whose
// state puts them in the bundle.
func bundleRoots(roots []RootStatus) []*x509.Certificate {
	var out []*x509.Certificate
	for _, st := range roots {
		if st.State.InBundle() {
			out = append(out, st.Cert)
		}
	}
	return out
}

// writeBundleFiles keeps dir/bundle.pem (the roots, for issuers'
// upstream.bundleFile and agents' --ca-bundle) and dir/bundle.spiffe.json
// (the SPIFFE bundle of td, for another mesh's federation bundleFile) up to
// date until ctx ends; then it returns nil. A failed write is logged and
// tried again at the next change.
func (r *Root) writeBundleFiles(ctx context.Context, dir string, td spiffeid.TrustDomain, log *slog.Logger) error {
	pemPath := filepath.Join(dir, "bundle.pem")
	jsonPath := filepath.Join(dir, "bundle.spiffe.json")
	var last []byte
	for {
		roots := bundleRoots(r.Roots())
		b, changed := r.Current()
		if len(roots) > 0 {
			pemData := trust.EncodeCertificates(roots...)
			if string(pemData) != string(last) {
				if err := renameio.WriteFile(pemPath, pemData, 0o644); err != nil {
					log.Error("writing bundle.pem failed", "error", err)
				} else {
					last = pemData
				}
				sb := spiffebundle.FromX509Authorities(td, roots)
				if b != nil {
					sb.SetSequenceNumber(b.Sequence)
				}
				if js, err := sb.Marshal(); err == nil {
					if err := renameio.WriteFile(jsonPath, js, 0o644); err != nil {
						log.Error("writing bundle.spiffe.json failed", "error", err)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(bundleFilesPoll):
		}
	}
}
