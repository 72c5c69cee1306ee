// Command imagebuild writes a meshca container image, without a daemon or a
// registry: one static Go binary, run as 65532:65532, no shell, written as
// an OCI image layout in a tar archive (what `ctr images import` and
// `skopeo copy oci-archive:` read), with a CycloneDX SBOM beside it. The
// same binary, options and SOURCE_DATE_EPOCH give the same bytes. `make
// images` runs it; docs/kubernetes.md says why go-containerregistry rather
// than ko or buildah.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	var o Options
	var out, sbomPath, cmd string
	fs.StringVar(&o.Name, "name", "", "image repository, e.g. localhost/meshca (required)")
	fs.StringVar(&o.Tag, "tag", "", "image tag (required)")
	fs.StringVar(&o.Binary, "binary", "", "static Go binary, becomes /NAME and the entrypoint (required)")
	fs.StringVar(&cmd, "args", "", "default arguments, space-separated")
	fs.StringVar(&o.Version, "version", "", "org.opencontainers.image.version (required)")
	fs.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision: the commit (required)")
	fs.StringVar(&o.Source, "source", "https://github.com/meshca/meshca", "org.opencontainers.image.source")
	fs.StringVar(&o.License, "license", "Apache-2.0", "org.opencontainers.image.licenses")
	fs.StringVar(&o.LicenseFile, "license-file", "", "license text shipped as /LICENSE")
	fs.StringVar(&out, "out", "", "OCI archive to write (required)")
	fs.StringVar(&sbomPath, "sbom", "", "CycloneDX JSON SBOM to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if out == "" || fs.NArg() != 0 {
		return fmt.Errorf("usage: imagebuild -name N -tag T -binary B -version V -revision R -out FILE [-sbom FILE]")
	}
	o.Args = strings.Fields(cmd)
	epoch, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	o.Epoch = epoch
	r, err := Build(o, out)
	if err != nil {
		return err
	}
	if sbomPath != "" {
		doc, err := SBOM(o, r)
		if err != nil {
			return err
		}
		if err := os.WriteFile(sbomPath, doc, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%s:%s %s archive-sha256:%s %s\n", o.Name, o.Tag, r.Digest, r.ArchiveSHA256, out)
	return nil
}

// sourceDateEpoch parses SOURCE_DATE_EPOCH (reproducible-builds.org): the
// commit's time in Unix seconds. It is required: a build time would make
// every build differ.
func sourceDateEpoch(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH is not set (make images sets it to the commit's time)")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a non-negative integer", s)
	}
	return time.Unix(n, 0).UTC(), nil
}
