package nodetest

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/kubetest"
)

// Versions and environment variables of the test bed (test/testbed/node.mk).
const (
	ContainerdVersion = "v2.4.2"
	RuncVersion       = "v1.5.3"

	EnvKubelet           = "MESHCA_KUBELET_BIN"
	EnvControllerManager = "MESHCA_KUBE_CONTROLLER_MANAGER_BIN"
	EnvScheduler         = "MESHCA_KUBE_SCHEDULER_BIN"
	// EnvContainerdDir is the directory holding containerd,
	// containerd-shim-runc-v2 and ctr.
	EnvContainerdDir = "MESHCA_CONTAINERD_DIR"
	EnvRunc          = "MESHCA_RUNC_BIN"
	// EnvImagebuild is tools/imagebuild, which packs a static binary into
	// an OCI archive (what `make images` runs).
	EnvImagebuild = "MESHCA_IMAGEBUILD_BIN"
	// EnvPauseImage is the OCI archive of the pod sandbox image.
	EnvPauseImage = "MESHCA_PAUSE_IMAGE"
)

// Binaries are the programs a node runs, besides kube-apiserver and etcd
// (kubetest.Binaries).
type Binaries struct {
	APIServer, Etcd, Kubelet, ControllerManager, Scheduler string
	Containerd, Shim, Ctr, Runc                            string
	// Imagebuild packs a static binary into an image (PackImage).
	Imagebuild string
	// PauseImage is the sandbox image's OCI archive; PauseRef its name,
	// read from the archive.
	PauseImage, PauseRef string
}

// FindBinaries returns the node's programs. When one is missing the test is
// skipped, or fails if CI=true: `make test` builds them.
func FindBinaries(tb testing.TB) Binaries {
	tb.Helper()
	var b Binaries
	b.APIServer, b.Etcd = kubetest.Binaries(tb)
	b, err := findBinaries(b)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("node test bed: %v (CI=true: the test bed must be built; run `make testbed-node`)", err)
		}
		tb.Skipf("node test bed: %v; `make test` (or `make testbed-node`) builds it", err)
	}
	return b
}

func findBinaries(b Binaries) (Binaries, error) {
	dir := testkit.TestbedDir()
	kube := func(name string) string { return filepath.Join(dir, name+"-"+kubetest.KubeVersion) }
	b.Kubelet = envOr(EnvKubelet, kube("kubelet"))
	b.ControllerManager = envOr(EnvControllerManager, kube("kube-controller-manager"))
	b.Scheduler = envOr(EnvScheduler, kube("kube-scheduler"))
	ctrd := envOr(EnvContainerdDir, filepath.Join(dir, "containerd-"+ContainerdVersion))
	b.Containerd = filepath.Join(ctrd, "containerd")
	b.Shim = filepath.Join(ctrd, "containerd-shim-runc-v2")
	b.Ctr = filepath.Join(ctrd, "ctr")
	b.Runc = envOr(EnvRunc, filepath.Join(dir, "runc-"+RuncVersion))
	// The packer and the pause image are named by a hash of their sources
	// (node.mk); without the variables, take the newest.
	b.Imagebuild = envOr(EnvImagebuild, newest(filepath.Join(dir, "imagebuild-*")))
	b.PauseImage = envOr(EnvPauseImage, newest(filepath.Join(dir, "pause-image-*.tar")))
	for _, p := range []string{b.Kubelet, b.ControllerManager, b.Scheduler, b.Containerd, b.Shim, b.Ctr, b.Runc, b.Imagebuild, b.PauseImage} {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return b, fmt.Errorf("%s not found", p)
		}
	}
	var err error
	if b.PauseRef, err = ImageRef(b.PauseImage); err != nil {
		return b, err
	}
	return b, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newest is the most recently modified file matching pattern, or pattern
// itself (which then is not found) when none does.
func newest(pattern string) string {
	paths, _ := filepath.Glob(pattern)
	slices.SortFunc(paths, func(a, b string) int {
		sa, _ := os.Stat(a)
		sb, _ := os.Stat(b)
		if sa == nil || sb == nil {
			return 0
		}
		return sb.ModTime().Compare(sa.ModTime())
	})
	if len(paths) == 0 {
		return pattern
	}
	return paths[0]
}

// ImageRef returns the name (io.containerd.image.name) of the one image in
// the OCI archive at path.
func ImageRef(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: no index.json", path)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if hdr.Name != "index.json" {
			continue
		}
		var index struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&index); err != nil {
			return "", fmt.Errorf("%s: index.json: %w", path, err)
		}
		if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] == "" {
			return "", fmt.Errorf("%s: want one image named by io.containerd.image.name", path)
		}
		return index.Manifests[0].Annotations["io.containerd.image.name"], nil
	}
}
