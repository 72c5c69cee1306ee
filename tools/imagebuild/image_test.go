package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

var epoch = time.Unix(1_767_225_600, 0).UTC() // 2026-01-01

// goBuild builds the pause program into dir with the environment given.
func goBuild(t *testing.T, dir string, env ...string) string {
	t.Helper()
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "../pause")
	cmd.Env = append(append(os.Environ(), "GOOS=linux", "GOFLAGS=-buildvcs=false"), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func options(bin string) Options {
	return Options{Name: "localhost/pause", Tag: "test", Binary: bin, Version: "v0.0.0-test",
		Revision: "0123456789abcdef", Source: "https://github.com/meshca/meshca", License: "Apache-2.0",
		LicenseFile: "../../LICENSE", Epoch: epoch}
}

// TestBuildIsReproducible builds the binary twice into different
// directories at different file times, and the image from each: the
// archives are the same bytes and the manifests the same digest. Another
// SOURCE_DATE_EPOCH gives another digest, so the comparison can fail.
func TestBuildIsReproducible(t *testing.T) {
	var results []Result
	var archives [][]byte
	for i, mtime := range []time.Time{time.Now(), time.Unix(1_000_000_000, 0)} {
		bin := goBuild(t, t.TempDir(), "CGO_ENABLED=0")
		if err := os.Chtimes(bin, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		archive := filepath.Join(t.TempDir(), "pause.tar")
		r, err := Build(options(bin), archive)
		if err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
		data, err := os.ReadFile(archive)
		if err != nil {
			t.Fatal(err)
		}
		results, archives = append(results, r), append(archives, data)
	}
	if results[0].Digest != results[1].Digest || results[0].ArchiveSHA256 != results[1].ArchiveSHA256 {
		t.Errorf("two builds differ: %s %s, %s %s", results[0].Digest, results[0].ArchiveSHA256, results[1].Digest, results[1].ArchiveSHA256)
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Error("two builds wrote different archives")
	}
	o := options(goBuild(t, t.TempDir(), "CGO_ENABLED=0"))
	o.Epoch = epoch.Add(time.Second)
	r, err := Build(o, filepath.Join(t.TempDir(), "other.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest == results[0].Digest {
		t.Errorf("another SOURCE_DATE_EPOCH gave the same digest %s", r.Digest)
	}
}

// TestImageContents reads the archive back as an OCI layout: the index
// names the image for containerd, the config runs the binary as
// 65532:65532 with the OCI labels, and the one layer holds the binary,
// passwd, group and the license, all dated at the epoch, and no shell.
func TestImageContents(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "pause.tar")
	if _, err := Build(options(goBuild(t, t.TempDir(), "CGO_ENABLED=0")), archive); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	untar(t, archive, dir)
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if got := desc.Annotations["io.containerd.image.name"]; got != "localhost/pause:test" {
		t.Errorf("io.containerd.image.name = %q", got)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture == "" {
		t.Errorf("platform = %+v", desc.Platform)
	}
	img, err := p.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || !slices.Equal(cf.Config.Entrypoint, []string{"/pause"}) || !cf.Created.Time.Equal(epoch) {
		t.Errorf("config: user %q entrypoint %q created %s", cf.Config.User, cf.Config.Entrypoint, cf.Created)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  "v0.0.0-test",
		"org.opencontainers.image.revision": "0123456789abcdef",
		"org.opencontainers.image.source":   "https://github.com/meshca/meshca",
		"org.opencontainers.image.licenses": "Apache-2.0",
	} {
		if cf.Config.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], want)
		}
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	files := layerFiles(t, layers[0])
	for _, want := range []string{"pause", "etc/passwd", "etc/group", "LICENSE", "tmp/"} {
		if _, ok := files[want]; !ok {
			t.Errorf("layer lacks %s; has %v", want, keys(files))
		}
	}
	for name, h := range files {
		if strings.Contains(name, "sh") && !strings.HasPrefix(name, "home") {
			t.Errorf("layer has %s", name)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s dated %s, want %s", name, h.ModTime, epoch)
		}
	}
	if h := files["pause"]; h != nil && (h.Mode != 0o555 || h.Uid != 0) {
		t.Errorf("pause: mode %o uid %d", h.Mode, h.Uid)
	}
	if passwd := files["etc/passwd"]; passwd == nil || !strings.Contains(string(contents(t, layers[0], "etc/passwd")), ":65532:65532:") {
		t.Error("etc/passwd does not name 65532")
	}
}

func TestRefusesNonStaticBinaries(t *testing.T) {
	for _, tc := range []struct {
		name, bin, want string
	}{
		{name: "cgo enabled", bin: goBuild(t, t.TempDir(), "CGO_ENABLED=1"), want: "CGO_ENABLED"},
		{name: "not Go", bin: "/bin/sh", want: "not a Go program"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archive := filepath.Join(t.TempDir(), "x.tar")
			_, err := Build(options(tc.bin), archive)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build = %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused build left %s", archive)
			}
		})
	}
}

func TestOptionsRequired(t *testing.T) {
	o := options("/nonexistent")
	o.Epoch = time.Time{}
	if _, err := Build(o, filepath.Join(t.TempDir(), "x.tar")); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("Build without an epoch = %v", err)
	}
	if _, err := sourceDateEpoch(""); err == nil {
		t.Error("an empty SOURCE_DATE_EPOCH was accepted")
	}
	if got, err := sourceDateEpoch("1767225600"); err != nil || !got.Equal(epoch) {
		t.Errorf("sourceDateEpoch = %s, %v", got, err)
	}
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		} else if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func layerReader(t *testing.T, l v1.Layer) *tar.Reader {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	return tar.NewReader(zr)
}

func layerFiles(t *testing.T, l v1.Layer) map[string]*tar.Header {
	t.Helper()
	files := map[string]*tar.Header{}
	tr := layerReader(t, l)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		} else if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
	}
}

func contents(t *testing.T, l v1.Layer, name string) []byte {
	t.Helper()
	tr := layerReader(t, l)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in layer: %v", name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func keys(m map[string]*tar.Header) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}
