package nodetest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// layout is where one node keeps its files. Everything lives under root, a
// short directory of its own (Unix socket paths are limited to 108 bytes),
// so that two nodes never share a path.
type layout struct {
	root string
}

func (l layout) path(elem ...string) string {
	return filepath.Join(append([]string{l.root}, elem...)...)
}

func (l layout) containerdSock() string { return l.path("containerd.sock") }
func (l layout) runcRoot() string       { return l.path("runc") }
func (l layout) kubeletRoot() string    { return l.path("kubelet") }
func (l layout) podLogs() string        { return l.path("pod-logs") }

// containerdConfig is containerd's configuration (format version 4, that of
// containerd 2.4): its own root, state, sockets, runc state and CDI
// directory; CRI with
// the local sandbox image, runc as the runtime, and the settings this kind
// of machine needs. NRI, the /opt installer and the image verifiers are off,
// as they use fixed host paths. containerd 2.4 always adds
// /etc/containerd/conf.d/*.toml to the imports, so Start refuses to run
// where such files exist.
func containerdConfig(l layout, shim, runc, pauseRef string) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return fmt.Sprintf(`version = 4
root = %[1]s
state = %[2]s
temp = %[3]s
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.image-verifier.v1.bindir"]

[plugins."io.containerd.server.v1.grpc"]
  address = %[4]s
[plugins."io.containerd.server.v1.ttrpc"]
  address = %[5]s

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = %[6]s

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[7]s

[plugins."io.containerd.cri.v1.runtime"]
  # Even root lacks CAP_SYS_RESOURCE here: lowering a process's
  # oom_score_adj is refused, so never ask for less than containerd's own.
  # Without this every sandbox fails: "runc init error(s): nsexec[...]:
  # failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  cdi_spec_dirs = [%[12]s]
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = %[13]s
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[8]s
        Root = %[9]s
        # cgroup v1 (hybrid) managed by cgroupfs, as the kubelet does.
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%[10]s]
    conf_dir = %[11]s
`, q(l.path("containerd", "root")), q(l.path("containerd", "state")), q(l.path("containerd", "tmp")),
		q(l.containerdSock()), q(l.containerdSock()+".ttrpc"), q(l.path("s")), q(pauseRef),
		q(runc), q(l.runcRoot()), q(l.path("cni", "bin")), q(l.path("cni", "conf")), q(l.path("cdi")), q(shim))
}

// hostContainerdDropIns are the configuration files containerd 2.4 reads
// besides the one it is given, whatever that one says.
const hostContainerdDropIns = "/etc/containerd/conf.d/*.toml"

// cniConfig is a network configuration that makes containerd report the
// pod network ready (without one the node never becomes Ready). Pods of this
// node use the host's network (hostNetwork: true); no CNI plugin binary is
// installed, so any other pod fails to start its sandbox with a clear error.
const cniConfig = `{"cniVersion": "1.0.0", "name": "meshca-nodetest", "plugins": [{"type": "host-network-only"}]}`

// kubeletConfig is the KubeletConfiguration (JSON is YAML): API on
// 127.0.0.1:port with client certificates of the cluster CA, no read-only
// or healthz port, pods under cgroupRoot, relaxed eviction and no image
// garbage collection (imported images cannot be pulled again).
func kubeletConfig(l layout, port int, caFile, certFile, keyFile, cgroupRoot string) ([]byte, error) {
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
		"address": "127.0.0.1", "port": port, "readOnlyPort": 0, "healthzPort": 0,
		"tlsCertFile": certFile, "tlsPrivateKeyFile": keyFile,
		"authentication": map[string]any{
			"x509":      map[string]any{"clientCAFile": caFile},
			"webhook":   map[string]any{"enabled": false},
			"anonymous": map[string]any{"enabled": false},
		},
		"authorization":            map[string]any{"mode": "AlwaysAllow"},
		"containerRuntimeEndpoint": "unix://" + l.containerdSock(),
		// This machine has the hybrid cgroup v1 layout, which the kubelet
		// refuses by default since 1.35.
		"failCgroupV1": false, "cgroupDriver": "cgroupfs", "cgroupRoot": cgroupRoot,
		"failSwapOn": false, "podLogsDir": l.podLogs(),
		"clusterDomain": "cluster.local", "resolvConf": resolvConf(),
		"syncFrequency": "10s", "nodeStatusUpdateFrequency": "5s", "fileCheckFrequency": "10s",
		"evictionHard": map[string]string{
			"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
		"serializeImagePulls": false,
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// resolvConf is the host's resolver configuration, or none ("") when the
// host has no /etc/resolv.conf.
func resolvConf() string {
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		return ""
	}
	return "/etc/resolv.conf"
}

// writeFiles writes each path → content with mode 0600, creating parents.
func writeFiles(files map[string][]byte) error {
	for path, data := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// mkdirs creates each directory (mode 0700) with its parents.
func mkdirs(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// localhostIPs are the kubelet serving certificate's IP addresses.
var localhostIPs = []net.IP{net.IPv4(127, 0, 0, 1)}

// cgroupName is the node's cgroup root below every hierarchy: unique per
// node, so that two nodes never share (or remove) each other's cgroups.
func cgroupName(root string) string {
	return "meshca-" + strings.TrimPrefix(filepath.Base(root), "meshca-")
}
