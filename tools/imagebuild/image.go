package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonroot is the user and group every image runs as (distroless's
// "nonroot"); the chart's securityContext names the same numbers.
const nonroot = 65532

// Options describe one image. Every field except License and Annotations is
// required.
type Options struct {
	// Name is the repository, e.g. "localhost/meshca"; Tag its tag.
	Name, Tag string
	// Binary is the static Go program to ship; it becomes /NAME, where NAME
	// is the base of Name, and the entrypoint.
	Binary string
	// Args are the entrypoint's default arguments (the image's Cmd).
	Args []string
	// Version, Revision and Source are the OCI labels
	// org.opencontainers.image.version, .revision and .source.
	Version, Revision, Source string
	// License is the SPDX expression of org.opencontainers.image.licenses;
	// LicenseFile, if set, is shipped as /LICENSE.
	License, LicenseFile string
	// Epoch is every timestamp in the image (SOURCE_DATE_EPOCH, the
	// commit's time): file times, the config's created, the history.
	Epoch time.Time
}

func (o Options) validate() error {
	switch {
	case o.Name == "" || o.Tag == "":
		return errors.New("image name and tag are required")
	case o.Binary == "":
		return errors.New("binary is required")
	case o.Version == "" || o.Revision == "" || o.Source == "" || o.License == "":
		return errors.New("version, revision, source and license are required (OCI labels)")
	case o.Epoch.IsZero():
		return errors.New("the epoch (SOURCE_DATE_EPOCH) is required")
	}
	return nil
}

// Result is what Build wrote.
type Result struct {
	// Digest is the image manifest's digest: what a runtime shows as the
	// image's id in a registry-free import.
	Digest v1.Hash
	// ArchiveSHA256 is the SHA-256 of the OCI archive file.
	ArchiveSHA256 string
	// Build is the Go build info of the binary (for the SBOM).
	Build *buildinfo.BuildInfo
}

// Build writes the image as an OCI image layout in a tar archive at
// archivePath: the same Options and binary give the same bytes.
func Build(o Options, archivePath string) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, err
	}
	bi, err := checkStatic(o.Binary)
	if err != nil {
		return Result{}, err
	}
	layerTar, err := rootfs(o)
	if err != nil {
		return Result{}, err
	}
	img, err := image(o, bi, layerTar)
	if err != nil {
		return Result{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return Result{}, err
	}
	sum, err := writeArchive(o, bi, img, archivePath)
	if err != nil {
		return Result{}, err
	}
	return Result{Digest: digest, ArchiveSHA256: sum, Build: bi}, nil
}

// checkStatic refuses anything but a Go program built with CGO_ENABLED=0
// for Linux and linked without a dynamic loader: the image has no libc.
func checkStatic(binary string) (*buildinfo.BuildInfo, error) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("%s: not a Go program with build info: %w", binary, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		return nil, fmt.Errorf("%s: built with CGO_ENABLED=%q; images need CGO_ENABLED=0", binary, settings["CGO_ENABLED"])
	}
	if settings["GOOS"] != "linux" || settings["GOARCH"] == "" {
		return nil, fmt.Errorf("%s: built for %s/%s, not linux", binary, settings["GOOS"], settings["GOARCH"])
	}
	f, err := elf.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", binary, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s: dynamically linked (has a program interpreter)", binary)
		}
	}
	return bi, nil
}

func goarch(bi *buildinfo.BuildInfo) string {
	for _, s := range bi.Settings {
		if s.Key == "GOARCH" {
			return s.Value
		}
	}
	return ""
}

// entry is one file or directory of the root filesystem.
type entry struct {
	name string
	mode int64 // permission bits; directories get tar.TypeDir
	dir  bool
	data []byte
}

// rootfs is the image's single layer, uncompressed: the binary, the
// user and group databases that name 65532, and nothing else (no shell).
// Every entry is owned by root, dated at the epoch, with a fixed mode, in
// a fixed order.
func rootfs(o Options) ([]byte, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: path.Base(o.Name), mode: 0o555, data: bin},
	}
	if o.LicenseFile != "" {
		license, err := os.ReadFile(o.LicenseFile)
		if err != nil {
			return nil, err
		}
		entries = append(entries, entry{name: "LICENSE", mode: 0o444, data: license})
	}
	slices.SortFunc(entries, func(a, b entry) int { return compareStrings(a.name, b.name) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: o.Epoch, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if e.name == "home/nonroot/" {
			h.Uid, h.Gid = nonroot, nonroot
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// labels are the OCI annotations, set both as config labels (what `ctr
// images` and `crictl inspecti` show) and as manifest annotations.
func labels(o Options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":    path.Base(o.Name),
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.revision": o.Revision,
		"org.opencontainers.image.source":   o.Source,
		"org.opencontainers.image.licenses": o.License,
		"org.opencontainers.image.created":  o.Epoch.UTC().Format(time.RFC3339),
	}
}

func image(o Options, bi *buildinfo.BuildInfo, layerTar []byte) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.Epoch.UTC()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "imagebuild " + path.Base(o.Binary), Comment: "static Go binary, passwd and group for 65532"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", goarch(bi), created
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
		Entrypoint: []string{"/" + path.Base(o.Name)},
		Cmd:        o.Args,
		WorkingDir: "/",
		Env:        []string{"PATH=/"},
		Labels:     labels(o),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, labels(o)).(v1.Image), nil
}

// writeArchive writes the OCI image layout to a temporary directory, then
// tars it into archivePath in a fixed order with fixed times and modes,
// and returns the archive's SHA-256. The index names the image for
// containerd (io.containerd.image.name) and by tag (OCI ref.name).
func writeArchive(o Options, bi *buildinfo.BuildInfo, img v1.Image, archivePath string) (string, error) {
	dir, err := os.MkdirTemp("", "imagebuild-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	err = p.AppendImage(img,
		layout.WithAnnotations(map[string]string{
			"io.containerd.image.name":          o.Name + ":" + o.Tag,
			"org.opencontainers.image.ref.name": o.Tag,
		}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: goarch(bi)}))
	if err != nil {
		return "", err
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if d.IsDir() {
			rel += "/"
		}
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		return "", err
	}
	slices.Sort(files)
	if err := os.MkdirAll(filepath.Dir(archivePath), 0o755); err != nil {
		return "", err
	}
	out, err := os.Create(archivePath)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(out, h))
	for _, name := range files {
		if err := addFile(tw, dir, name, o.Epoch); err != nil {
			out.Close()
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func addFile(tw *tar.Writer, dir, name string, epoch time.Time) error {
	hdr := &tar.Header{Name: name, ModTime: epoch, Format: tar.FormatPAX}
	if name[len(name)-1] == '/' {
		hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		return tw.WriteHeader(hdr)
	}
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		return err
	}
	hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(data))
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = tw.Write(data)
	return err
}
