package nodetest

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseMountInfo(t *testing.T) {
	info := strings.Join([]string{
		`22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw`,
		`30 22 0:26 / /tmp/meshca-node-1/kubelet/pods/a/volumes/x rw shared:5 - tmpfs tmpfs rw`,
		`31 22 0:27 / /tmp/meshca-node-1/containerd/state/x/rootfs rw - overlay overlay rw,lowerdir=a`,
		`32 22 0:28 / /tmp/meshca-node-1/with\040space rw - tmpfs tmpfs rw`,
		`33 22 0:29 / /tmp/meshca-node-10/other rw - tmpfs tmpfs rw`,
		`34 22 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory`,
		`35 22 0:30 / /tmp/meshca-node-1/containerd/state/x/rootfs rw - overlay overlay rw`,
		`garbage`,
	}, "\n")
	under := func(point, _ string) bool { return strings.HasPrefix(point, "/tmp/meshca-node-1/") }
	got, err := parseMountInfo([]byte(info), under)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/tmp/meshca-node-1/containerd/state/x/rootfs",
		"/tmp/meshca-node-1/kubelet/pods/a/volumes/x",
		"/tmp/meshca-node-1/with space",
	}
	if !slices.Equal(got, want) {
		t.Errorf("mounts under the node:\n got %q\nwant %q (longest, so deepest, first; each once; unescaped)", got, want)
	}
	cg, _ := parseMountInfo([]byte(info), func(_, fstype string) bool { return fstype == "cgroup" })
	if !slices.Equal(cg, []string{"/sys/fs/cgroup/memory"}) {
		t.Errorf("cgroup hierarchies: %q", cg)
	}
}

func TestImageRef(t *testing.T) {
	for name, tc := range map[string]struct {
		index   string
		want    string
		wantErr bool
	}{
		"named":    {index: `{"manifests":[{"annotations":{"io.containerd.image.name":"localhost/p:1"}}]}`, want: "localhost/p:1"},
		"unnamed":  {index: `{"manifests":[{"annotations":{}}]}`, wantErr: true},
		"two":      {index: `{"manifests":[{},{}]}`, wantErr: true},
		"not json": {index: `{`, wantErr: true},
		"no index": {index: "", wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if tc.index != "" {
				tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: int64(len(tc.index))})
				tw.Write([]byte(tc.index))
			}
			tw.Close()
			path := filepath.Join(t.TempDir(), "image.tar")
			if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ImageRef(path)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ImageRef = %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestRemoveLinksInto(t *testing.T) {
	dir, target := t.TempDir(), t.TempDir()
	ours := filepath.Join(dir, "ours.log")
	theirs := filepath.Join(dir, "theirs.log")
	plain := filepath.Join(dir, "plain.log")
	if err := os.Symlink(filepath.Join(target, "pod", "0.log"), ours); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/var/log/pods/other/0.log", theirs); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeLinksInto(dir, target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(ours); !os.IsNotExist(err) {
		t.Errorf("link into the node's directory kept: %v", err)
	}
	for _, p := range []string{theirs, plain} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}
