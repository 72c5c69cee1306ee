package federation

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// keyPairFiles serves a certificate/key file pair and reloads it on the
// first handshake after either file changed. Changes are detected with
// stat (file identity, size, modification time), which is cheap next to a
// handshake and sees both in-place writes and rename/symlink swaps.
type keyPairFiles struct {
	certFile, keyFile string
	log               *slog.Logger

	mu   sync.Mutex
	cert *tls.Certificate
	// loaded is the stamp of the pair in cert; failed and failedMsg
	// describe the last failure, so that a broken pair is logged once
	// rather than on every handshake.
	loaded, failed pairStamp
	failedMsg      string
}

type fileStamp struct {
	info    os.FileInfo
	size    int64
	modTime time.Time
}

type pairStamp struct{ cert, key fileStamp }

func (a fileStamp) same(b fileStamp) bool {
	return a.info != nil && b.info != nil && os.SameFile(a.info, b.info) && a.size == b.size && a.modTime.Equal(b.modTime)
}

func (a pairStamp) same(b pairStamp) bool { return a.cert.same(b.cert) && a.key.same(b.key) }

// sameOrUnknown is same, and also true when neither stamp is known (the
// files could not be stat'ed either time).
func (a pairStamp) sameOrUnknown(b pairStamp) bool {
	return a.same(b) || (a.cert.info == nil && b.cert.info == nil)
}

func newKeyPairFiles(certFile, keyFile string, log *slog.Logger) (*keyPairFiles, error) {
	k := &keyPairFiles{certFile: certFile, keyFile: keyFile, log: log}
	st, err := k.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate pair: %w", err)
	}
	k.cert, k.loaded = &cert, st
	return k, nil
}

func (k *keyPairFiles) stat() (pairStamp, error) {
	var p pairStamp
	for _, f := range []struct {
		path string
		to   *fileStamp
	}{{k.certFile, &p.cert}, {k.keyFile, &p.key}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			return pairStamp{}, fmt.Errorf("certificate pair: %w", err)
		}
		*f.to = fileStamp{info: fi, size: fi.Size(), modTime: fi.ModTime()}
	}
	return p, nil
}

// getCertificate is the tls.Config callback. It never fails once a pair
// has loaded: a missing or broken pair leaves the previous one in service.
func (k *keyPairFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st, err := k.stat()
	if err == nil && st.same(k.loaded) {
		return k.cert, nil
	}
	if err == nil {
		var cert tls.Certificate
		if cert, err = tls.LoadX509KeyPair(k.certFile, k.keyFile); err == nil {
			k.cert, k.loaded, k.failed, k.failedMsg = &cert, st, pairStamp{}, ""
			attrs := []any{"cert_file", k.certFile}
			if cert.Leaf != nil {
				attrs = append(attrs, "not_after", cert.Leaf.NotAfter)
			}
			k.log.Info("federation endpoint certificate reloaded", attrs...)
			return k.cert, nil
		}
	}
	// A pair caught half-written also ends here; the next handshake after
	// the second file lands retries.
	if msg := err.Error(); msg != k.failedMsg || !st.sameOrUnknown(k.failed) {
		k.log.Warn("federation endpoint certificate not reloaded; serving the previous one",
			"cert_file", k.certFile, "key_file", k.keyFile, "error", msg)
		k.failed, k.failedMsg = st, msg
	}
	return k.cert, nil
}
