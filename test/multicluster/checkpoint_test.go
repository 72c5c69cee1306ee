package multicluster

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshca/meshca/test/harness"
)

// TestRootAndIssuerSignAuditCheckpoints runs a root and an issuer, issues a
// workload certificate, stops both and checks that each signed a checkpoint
// of its own audit chain into DATA_DIR/audit-checkpoints, logged it, and
// that `meshca audit verify --checkpoint` accepts the untouched chains.
func TestRootAndIssuerSignAuditCheckpoints(t *testing.T) {
	root := startRoot(t, "")
	east := startIssuer(t, root, "east", "east.example", "")
	startWorkload(t, east, root.BundlePath(), "shop", "frontend", time.Hour)
	root.Stop(t)
	east.Stop(t)
	for _, p := range []struct {
		proc      *harness.Proc
		dir, name string
	}{{root.Proc, root.Dir, "root"}, {east.Proc, east.Dir, "cluster/east"}} {
		if !strings.Contains(p.proc.Output(), `"msg":"audit checkpoint","chain":"`+p.name+`"`) {
			t.Errorf("%s logged no audit checkpoint:\n%s", p.name, p.proc.Output())
		}
		latest := filepath.Join(p.dir, "audit-checkpoints", "latest.json")
		out, err := run(t, "audit", "verify", "--data-dir", p.dir, "--checkpoint", latest)
		if err != nil || !strings.Contains(out, `chain "`+p.name+`"`) || !strings.Contains(out, "reaches 1 checkpoint") {
			t.Errorf("audit verify of %s against its checkpoint: err %v, output %q", p.name, err, out)
		}
	}
}
