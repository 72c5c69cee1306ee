package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Test-bed binaries: containerd, its ctr client and runc shim, and runc.
// The variables override where they are looked for.
const (
	envContainerdDir = "MESHCA_CONTAINERD_DIR" // containerd, ctr, containerd-shim-runc-v2
	envRunc          = "MESHCA_RUNC_BIN"
	containerdDir    = "containerd-v2.4.2"
	runcBin          = "runc-v1.5.3"
)

func testbedPath(env, name string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "meshca-testbed", name)
}

// TestContainerdImportsAndRuns imports an image archive into a real
// containerd with `ctr images import` (what the test bed's node does) and
// runs it with runc on a read-only root filesystem: the archive is one
// containerd accepts, under the name and digest Build reported, and the
// static binary runs in an image without a shell or a libc.
func TestContainerdImportsAndRuns(t *testing.T) {
	dir := testbedPath(envContainerdDir, containerdDir)
	runc := testbedPath(envRunc, runcBin)
	for _, p := range []string{filepath.Join(dir, "containerd"), filepath.Join(dir, "ctr"), filepath.Join(dir, "containerd-shim-runc-v2"), runc} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("test bed: %v (CI=true: the test bed must provide containerd and runc)", err)
			}
			t.Skipf("test bed: %v; the test bed's containerd and runc are needed", err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	bin := buildAgent(t)
	o := options(bin)
	o.Name, o.Tag = "localhost/meshca-agent", "ctr-test"
	archive := filepath.Join(t.TempDir(), "agent.tar")
	r, err := Build(o, archive)
	if err != nil {
		t.Fatal(err)
	}
	ctr := startContainerd(t, dir)
	ctr(t, "images", "import", archive)
	out := ctr(t, "images", "ls")
	if !strings.Contains(out, "localhost/meshca-agent:ctr-test") || !strings.Contains(out, r.Digest.String()) {
		t.Errorf("ctr images ls lacks the image %s:\n%s", r.Digest, out)
	}
	out = ctr(t, "run", "--rm", "--read-only", "--snapshotter", "native", "--runc-binary", runc,
		"localhost/meshca-agent:ctr-test", "meshca-imagebuild-test", "/meshca-agent", "version")
	if !strings.HasPrefix(out, "meshca-agent v9.9.9-ctr ") {
		t.Errorf("meshca-agent version in the container printed %q", out)
	}
}

// buildAgent builds meshca-agent as `make images` does.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshca-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace,netgo", "-ldflags", "-X main.version=v9.9.9-ctr -s -w", "-o", bin, "./cmd/meshca-agent")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build meshca-agent: %v\n%s", err, out)
	}
	return bin
}

// startContainerd runs containerd in its own directories (CRI off) until
// the test ends, and returns a runner of ctr against it (standard output;
// ctr writes progress and warnings to standard error).
func startContainerd(t *testing.T, dir string) func(*testing.T, ...string) string {
	t.Helper()
	// A short directory: the socket path must fit sun_path.
	work, err := os.MkdirTemp("", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(work, "c.sock")
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(work, "root"), filepath.Join(work, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(work, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(filepath.Join(dir, "containerd"), "--config", filepath.Join(work, "config.toml"))
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("containerd log:\n%s", log.String())
		}
		if err := os.RemoveAll(work); err != nil {
			t.Errorf("remove containerd's directories: %v", err)
		}
	})
	path := dir + string(os.PathListSeparator) + os.Getenv("PATH") // the shim
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		c := exec.Command(filepath.Join(dir, "ctr"), append([]string{"--address", sock, "--namespace", "meshca-imagebuild"}, args...)...)
		c.Env = append(os.Environ(), "PATH="+path)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
		}
		return string(out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := exec.Command(filepath.Join(dir, "ctr"), "--address", sock, "version")
		if c.Run() == nil {
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30s", sock)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
