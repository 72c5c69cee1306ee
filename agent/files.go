package agent

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
	"github.com/meshca/meshca/trust"
)

// File names written by WriteFiles.
const (
	certFile   = "cert.pem"
	keyFile    = "key.pem"
	bundleFile = "bundle.pem"
)

// WriteFiles writes svid into dir as cert.pem (leaf then intermediates),
// key.pem (PKCS#8, mode 0600) and bundle.pem (roots). Each file is replaced
// atomically; the key is written first so that a reader never sees a
// certificate without its key.
func WriteFiles(dir string, svid *SVID) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(svid.Key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	block := &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{keyFile, pemEncode(block), 0o600},
		{certFile, trust.EncodeCertificates(svid.Chain...), 0o644},
		{bundleFile, trust.EncodeCertificates(svid.Roots...), 0o644},
	}
	for _, f := range files {
		if err := renameio.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }
