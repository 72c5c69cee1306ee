package nodetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestContainerdConfig has containerd itself read the node's configuration
// (`containerd config dump`): every path it would use is the node's own,
// and the settings this machine needs are in force. A key containerd moved
// or renamed would otherwise be ignored, or silently migrated.
func TestContainerdConfig(t *testing.T) {
	bins := FindBinaries(t)
	l := layout{root: t.TempDir()}
	cfg := filepath.Join(l.root, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(l, bins.Shim, bins.Runc, "localhost/pause:x")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.Containerd, "--config", cfg, "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	dump := string(out)
	if strings.Contains(dump, "migrated") {
		t.Errorf("containerd migrated the configuration (outdated format):\n%s", dump)
	}
	for _, want := range []string{
		"root = '" + l.path("containerd", "root") + "'",
		"state = '" + l.path("containerd", "state") + "'",
		"imports = ['" + hostContainerdDropIns + "']",
		"address = '" + l.containerdSock() + "'",
		"address = '" + l.containerdSock() + ".ttrpc'",
		"socket_dir = '" + l.path("s") + "'",
		"sandbox = 'localhost/pause:x'",
		"restrict_oom_score_adj = true",
		"BinaryName = '" + bins.Runc + "'",
		"runtime_path = '" + bins.Shim + "'",
		"Root = '" + l.runcRoot() + "'",
		"conf_dir = '" + l.path("cni", "conf") + "'",
		"cdi_spec_dirs = ['" + l.path("cdi") + "']",
		"netns_mounts_under_state_dir = true",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("effective configuration lacks %s", want)
		}
	}
	// Every other absolute path in the configuration is empty or the node's.
	for line := range strings.Lines(dump) {
		if _, v, ok := strings.Cut(line, "= '/"); ok && !strings.HasPrefix(line, "imports") && !strings.HasPrefix("/"+v, l.root) &&
			!strings.HasPrefix("/"+v, filepath.Dir(bins.Shim)) && !strings.HasPrefix("/"+v, bins.Runc) {
			t.Errorf("host path in effective configuration: %s", strings.TrimSpace(line))
		}
	}
}
