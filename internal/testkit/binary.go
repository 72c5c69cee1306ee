package testkit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// buildTimeout bounds building the binary.
const buildTimeout = 10 * time.Minute

// MeshcaBinary returns the absolute path of the meshca binary for tests that
// run it as a process: $MESHCA_BIN when set (it must exist), otherwise
// cmd/meshca built into dir as "meshca". It takes no testing.TB because it
// is meant for TestMain, where a failed build must fail the whole run rather
// than skip it.
func MeshcaBinary(dir string) (string, error) {
	if env := os.Getenv("MESHCA_BIN"); env != "" {
		abs, err := filepath.Abs(env)
		if err != nil {
			return "", fmt.Errorf("MESHCA_BIN=%q: %w", env, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("MESHCA_BIN=%q: %w", env, err)
		}
		return abs, nil
	}
	bin := filepath.Join(dir, "meshca")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// `go test` puts its own GOROOT/bin first on PATH, so this is the same go.
	cmd := GoCommand(ctx, "build", "-o", bin, "github.com/meshca/meshca/cmd/meshca")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build github.com/meshca/meshca/cmd/meshca: %w\n%s", err, out)
	}
	return bin, nil
}
