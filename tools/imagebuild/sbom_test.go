package main

import (
	"encoding/json"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestSBOMListsEveryModule: the CycloneDX document of a real image names
// the main module and each dependency from the binary's build info, with
// its version, its go.sum hash (as a property and as hex SHA-256) and a
// package URL.
func TestSBOMListsEveryModule(t *testing.T) {
	o := options(goBuild(t, t.TempDir(), "CGO_ENABLED=0"))
	r, err := Build(o, filepath.Join(t.TempDir(), "pause.tar"))
	if err != nil {
		t.Fatal(err)
	}
	// pause links the standard library only; give the SBOM dependencies
	// to list as the meshca binaries have them.
	r.Build.Deps = []*debug.Module{
		{Path: "github.com/spf13/cobra", Version: "v1.10.2", Sum: "h1:cdt6ZUxWkt0pnMhb6E4MenoN8hJYjZLcgMXxN0BzNFg="},
		{Path: "example.com/old", Version: "v1.0.0", Replace: &debug.Module{Path: "example.com/new", Version: "v1.0.1", Sum: "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}},
	}
	raw, err := SBOM(o, r)
	if err != nil {
		t.Fatal(err)
	}
	var doc bom
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("SBOM is not JSON: %v", err)
	}
	if doc.BOMFormat != "CycloneDX" || doc.SpecVersion != "1.5" || doc.Metadata.Timestamp != "2026-01-01T00:00:00Z" {
		t.Errorf("header: %s %s %s", doc.BOMFormat, doc.SpecVersion, doc.Metadata.Timestamp)
	}
	if !strings.Contains(doc.Metadata.Component.PURL, r.Digest.String()) {
		t.Errorf("the image component %q does not name the digest %s", doc.Metadata.Component.PURL, r.Digest)
	}
	byName := map[string]component{}
	for _, c := range doc.Components {
		byName[c.Name] = c
	}
	if m := byName["github.com/meshca/meshca/tools"]; m.Version != "v0.0.0-test" || m.Type != "application" {
		t.Errorf("main module component = %+v", m)
	}
	cobra := byName["github.com/spf13/cobra"]
	if cobra.Version != "v1.10.2" || cobra.PURL != "pkg:golang/github.com/spf13/cobra@v1.10.2?type=module" ||
		len(cobra.Hashes) != 1 || cobra.Hashes[0].Content != "71db7a654c5692dd299cc85be84e0c7a7a0df212588d92dc80c5f13740733458" {
		t.Errorf("cobra component = %+v", cobra)
	}
	if n := byName["example.com/new"]; n.Version != "v1.0.1" || len(n.Properties) == 0 || n.Properties[0].Value != "example.com/old@v1.0.0" {
		t.Errorf("replaced module component = %+v", n)
	}
	if len(doc.Dependencies) < 2 || len(doc.Dependencies[1].DependsOn) != 2 {
		t.Errorf("dependencies = %+v", doc.Dependencies)
	}
	again, err := SBOM(o, r)
	if err != nil || string(again) != string(raw) {
		t.Error("the same image gave another SBOM")
	}
}
