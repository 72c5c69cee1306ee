package root

import (
	"bytes"
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

// bundleFilesPoll is how often bundleFiles.follow looks at the roots'
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

// bundleFiles keeps dir/bundle.pem (the roots, for issuers'
// upstream.bundleFile and agents' --ca-bundle) and dir/bundle.spiffe.json
// (the SPIFFE bundle of td, for another mesh's federation bundleFile). A
// failed write is logged and tried again at the next change.
type bundleFiles struct {
	dir string
	td  spiffeid.TrustDomain
	log *slog.Logger
	// last is the bundle.pem content written last.
	last []byte
}

// write brings both files up to date with r's roots, when they changed.
// The SPIFFE bundle goes first: whoever sees a new bundle.pem finds its
// bundle.spiffe.json too.
func (f *bundleFiles) write(r *Root) {
	roots := bundleRoots(r.Roots())
	if len(roots) == 0 {
		return
	}
	pemData := trust.EncodeCertificates(roots...)
	if bytes.Equal(pemData, f.last) {
		return
	}
	sb := spiffebundle.FromX509Authorities(f.td, roots)
	if b, _ := r.Current(); b != nil {
		sb.SetSequenceNumber(b.Sequence)
	}
	js, err := sb.Marshal()
	if err == nil {
		err = renameio.WriteFile(filepath.Join(f.dir, "bundle.spiffe.json"), js, 0o644)
	}
	if err != nil {
		f.log.Error("writing bundle.spiffe.json failed", "error", err)
		return
	}
	if err := renameio.WriteFile(filepath.Join(f.dir, "bundle.pem"), pemData, 0o644); err != nil {
		f.log.Error("writing bundle.pem failed", "error", err)
		return
	}
	f.last = pemData
}

// follow keeps the files up to date until ctx ends; then it returns nil.
func (f *bundleFiles) follow(ctx context.Context, r *Root) error {
	for {
		_, changed := r.Current()
		f.write(r)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(bundleFilesPoll):
		}
	}
}
