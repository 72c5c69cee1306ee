package nodetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshca/meshca/test/harness"
)

// containerLogLinks is where the kubelet links every container's log, and
// devicePlugins where it serves device-plugin registration (a socket and a
// checkpoint): host paths it does not let us move.
const (
	containerLogLinks = "/var/log/containers"
	devicePlugins     = "/var/lib/kubelet/device-plugins"
)

// teardown removes what the node left once its processes are stopped:
// containers (by runc, whose state is the node's own), the shims (found by
// their containerd address, which is the node's own), every mount under the
// node's directory (deepest first), the node's cgroups (leaves first), the
// kubelet's log links into the node's directory and, when no kubelet is left
// running, its other fixed host paths; then the directory. It goes on after
// an error and returns them all.
func (n *Node) teardown() error {
	var errs []error
	errs = append(errs, n.killContainers())
	errs = append(errs, killShims(n.dir.containerdSock()))
	errs = append(errs, unmountUnder(n.dir.root))
	errs = append(errs, n.removeCgroups())
	errs = append(errs, removeLinksInto(containerLogLinks, n.dir.root))
	errs = append(errs, removeKubeletHostPaths())
	if err := os.RemoveAll(n.dir.root); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// staleAge is how old a node directory must be before sweepStale may take
// it for the remains of a dead test: a live node starts its containerd
// within moments of making its directory.
const staleAge = 2 * time.Minute

// sweepStale tears down the remains of nodes whose test died without
// cleaning up (a `go test -timeout` panic runs no cleanups): node
// directories older than staleAge whose containerd no longer runs. It uses
// runc to delete their containers.
func sweepStale(runc string) error {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "meshca-node-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range dirs {
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() || time.Since(st.ModTime()) < staleAge {
			continue
		}
		cfg := filepath.Join(dir, "containerd.toml")
		if len(processesWith(func(args []string) bool { return slices.Contains(args, cfg) })) > 0 {
			continue
		}
		n := &Node{bins: Binaries{Runc: runc}, dir: layout{root: dir}, cgroup: cgroupName(dir)}
		if err := n.teardown(); err != nil {
			errs = append(errs, fmt.Errorf("stale node %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// killContainers force-deletes every container runc knows in the node's
// runc state directory (containerd keeps one per namespace).
func (n *Node) killContainers() error {
	nsDirs, err := os.ReadDir(n.dir.runcRoot())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nsDirs {
		root := filepath.Join(n.dir.runcRoot(), ns.Name())
		ids, err := harness.Run(n.bins.Runc, "--root", root, "list", "--quiet")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for id := range strings.FieldsSeq(ids) {
			if _, err := harness.Run(n.bins.Runc, "--root", root, "delete", "--force", id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// killShims kills every containerd-shim-runc-v2 serving the containerd at
// address and waits (bounded) until they are gone, so that their mounts are
// free. Shims outlive containerd by design.
func killShims(address string) error {
	pids := shims(address)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if left := shims(address); len(left) > 0 {
		return fmt.Errorf("shims %v still running after SIGKILL", left)
	}
	return nil
}

// shims returns the process ids of the containerd-shim-runc-v2 processes
// serving the containerd at address, found by their command line
// (-address ADDRESS).
func shims(address string) []int {
	return processesWith(func(args []string) bool {
		if !strings.HasSuffix(args[0], "containerd-shim-runc-v2") {
			return false
		}
		i := slices.Index(args, "-address")
		return i >= 0 && i+1 < len(args) && args[i+1] == address
	})
}

// processesWith returns the ids of the processes whose command line
// (never empty) satisfies match.
func processesWith(match func(args []string) bool) []int {
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		if match(strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder unmounts every mount point at or below dir, deepest first;
// a busy mount is detached (lazily unmounted) rather than left.
func unmountUnder(dir string) error {
	points, err := mountPoints(func(point, _ string) bool {
		return point == dir || strings.HasPrefix(point, dir+"/")
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, 0); err != nil {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// mountPoints returns the mount points of this mount namespace for which
// keep(point, fstype) holds, deepest (longest) first, each once.
func mountPoints(keep func(point, fstype string) bool) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountInfo(data, keep)
}

// parseMountInfo is mountPoints on the contents of a mountinfo file.
func parseMountInfo(data []byte, keep func(point, fstype string) bool) ([]string, error) {
	var points []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		point := unescapeMount(f[4])
		if keep(point, f[sep+1]) && !slices.Contains(points, point) {
			points = append(points, point)
		}
	}
	slices.SortStableFunc(points, func(a, b string) int { return len(b) - len(a) })
	return points, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupHierarchies are the mount points of every cgroup hierarchy (v1
// controllers and the v2 tree of the hybrid layout).
func cgroupHierarchies() ([]string, error) {
	return mountPoints(func(_, fstype string) bool { return fstype == "cgroup" || fstype == "cgroup2" })
}

// makeCgroups creates the node's cgroup root in every hierarchy; the
// kubelet requires it to exist and puts its pod cgroups below it.
func (n *Node) makeCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		if err := os.Mkdir(filepath.Join(h, n.cgroup), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", n.cgroup, err)
		}
	}
	return nil
}

// removeCgroups removes the node's cgroups in every hierarchy, leaves
// first. A cgroup that still holds a process cannot be removed: that is an
// error, as it means a container survived.
func (n *Node) removeCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, n.cgroup)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.Reverse(dirs) // children after their parent in a walk
		for _, d := range dirs {
			if err := removeCgroup(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroup removes one empty cgroup, retrying briefly while the kernel
// finishes taking its last killed processes out of it.
func removeCgroup(dir string) error {
	var err error
	for range 50 {
		if err = syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}

// removeKubeletHostPaths removes the kubelet's fixed host paths once no
// kubelet runs on the machine (another node's, or a real one, still uses
// them): the device-plugin socket and checkpoint, then those directories and
// the log-link directory if they are empty.
func removeKubeletHostPaths() error {
	if len(processesWith(func(args []string) bool { return strings.HasPrefix(filepath.Base(args[0]), "kubelet") })) > 0 {
		return nil
	}
	var errs []error
	for _, f := range []string{"kubelet.sock", "kubelet_internal_checkpoint"} {
		if err := os.Remove(filepath.Join(devicePlugins, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{devicePlugins, filepath.Dir(devicePlugins), containerLogLinks} {
		_ = os.Remove(d) // only if empty
	}
	return errors.Join(errs...)
}

// removeLinksInto removes the symbolic links in dir that point below
// target.
func removeLinksInto(dir, target string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if dest, err := os.Readlink(p); err == nil && strings.HasPrefix(dest, target+"/") {
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
