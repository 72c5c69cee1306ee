// Command imagepack packs one static binary into a single-layer OCI image
// ("FROM scratch": the binary at /NAME, nothing else) and writes it as an OCI
// image-layout archive that `ctr images import` reads. The image is
// reproducible: file times and the creation time are zero, so the same
// binary always gives the same digest.
//
//	imagepack -binary bin/pause -ref localhost/meshca-pause:v1 -o pause.tar
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	binary := flag.String("binary", "", "static binary to pack (required)")
	ref := flag.String("ref", "", "image reference, e.g. localhost/NAME:TAG (required)")
	out := flag.String("o", "", "output OCI archive (required)")
	user := flag.Int("user", 65532, "numeric user and group the image runs as")
	flag.Parse()
	if err := run(*binary, *ref, *out, *user); err != nil {
		fmt.Fprintln(os.Stderr, "imagepack:", err)
		os.Exit(1)
	}
}

func run(binary, ref, out string, user int) error {
	if binary == "" || ref == "" || out == "" {
		return errors.New("-binary, -ref and -o are required")
	}
	// containerd and the kubelet take "localhost/NAME:TAG" as is (the first
	// component is the registry); go-containerregistry would rewrite it to
	// docker.io, so it only checks the syntax and the ref is kept verbatim.
	if _, err := name.NewTag(ref, name.WeakValidation); err != nil || !strings.Contains(ref, ":") {
		return fmt.Errorf("image reference %q: want REGISTRY/NAME:TAG (%v)", ref, err)
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	entry := "/" + filepath.Base(binary)
	img, err := image(bin, entry, user)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), ".imagepack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	// containerd names the imported image by io.containerd.image.name; other
	// tools read the OCI annotation.
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": ref,
	})); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarDir(dir, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// image is an OCI image whose only layer holds bin at path entry, run as
// user:user.
func image(bin []byte, entry string, user int) (v1.Image, error) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	hdr := &tar.Header{
		Name: entry[1:], Mode: 0o555, Size: int64(len(bin)), Typeflag: tar.TypeReg,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	uid := strconv.Itoa(user)
	cf.Config.Entrypoint = []string{entry}
	cf.Config.User = uid + ":" + uid
	cf.Config.Env = []string{"PATH=/"}
	return mutate.ConfigFile(img, cf)
}

// tarDir writes the regular files under dir into a tar archive at out, with
// names relative to dir and zero times, in the walk's (lexical) order.
func tarDir(dir, out string) error {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if d.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			return tw.WriteHeader(hdr)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
