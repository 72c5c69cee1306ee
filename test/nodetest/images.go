package nodetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// BuildImage builds the Go main package pkg (a path as `go build` takes it,
// relative to the test's package directory) as a static binary, packs it
// into an image named ref (REGISTRY/NAME:TAG, e.g. localhost/app:test) with
// the binary as /NAME and its entrypoint, run as UID 65532, and imports it
// into the node.
func (n *Node) BuildImage(tb testing.TB, pkg, ref string) {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	cmd := testkit.GoCommand(context.Background(), "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	n.ImportImage(tb, n.PackImage(tb, bin, ref))
}

// PackImage packs the static Go binary bin into an OCI archive of the image
// ref (REGISTRY/NAME:TAG) with tools/imagebuild, as `make images` does, and
// returns the archive's path.
func (n *Node) PackImage(tb testing.TB, bin, ref string) string {
	tb.Helper()
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		tb.Fatalf("image %q: want REGISTRY/NAME:TAG", ref)
	}
	archive := filepath.Join(tb.TempDir(), "image.tar")
	cmd := exec.Command(n.bins.Imagebuild, "-name", ref[:i], "-tag", ref[i+1:], "-binary", bin,
		"-version", "test", "-revision", "test", "-out", archive)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("pack %s: %v\n%s", ref, err, out)
	}
	return archive
}
