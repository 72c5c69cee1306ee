package nodetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/meshca/meshca/test/harness"
)

// BuildImage builds the Go main package pkg (a path as `go build` takes it,
// relative to the test's package directory) as a static binary, packs it
// into an image named ref (REGISTRY/NAME:TAG, e.g. localhost/app:test) with
// the binary as its entrypoint (/NAME-OF-BINARY, run as UID 65532), and
// imports it into the node.
func (n *Node) BuildImage(tb testing.TB, pkg, ref string) {
	tb.Helper()
	dir := tb.TempDir()
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	archive := filepath.Join(dir, "image.tar")
	if out, err := harness.Run(n.bins.Imagepack, "-binary", bin, "-ref", ref, "-o", archive); err != nil {
		tb.Fatalf("pack %s: %v\n%s", ref, err, out)
	}
	n.ImportImage(tb, archive)
}
