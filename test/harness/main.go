package harness

import (
	"fmt"
	"os"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// Main is a TestMain body for a suite that runs the meshca binary: it puts
// the binary (built into a temporary directory, or $MESHCA_BIN) into *bin,
// runs the tests, calls each of after and exits. A failed build fails the
// whole run: the tests never skip because the binary is missing.
func Main(m *testing.M, suite string, bin *string, after ...func()) {
	code := 1
	dir, err := os.MkdirTemp("", "meshca-"+suite+"-")
	if err == nil {
		if *bin, err = testkit.MeshcaBinary(dir); err == nil {
			code = m.Run()
		}
		os.RemoveAll(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, suite+":", err)
	}
	for _, f := range after {
		f()
	}
	os.Exit(code)
}
