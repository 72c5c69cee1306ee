package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// The SBOM is CycloneDX 1.5 JSON, made from the binary's Go build info: the
// main module and every module linked, each with its version, a package
// URL and its go.sum hash. It is what the toolchain recorded while
// building, not a scan of the image, so it lists exactly what was linked.

type bom struct {
	BOMFormat    string       `json:"bomFormat"`
	SpecVersion  string       `json:"specVersion"`
	SerialNumber string       `json:"serialNumber"`
	Version      int          `json:"version"`
	Metadata     bomMetadata  `json:"metadata"`
	Components   []component  `json:"components"`
	Dependencies []dependency `json:"dependencies"`
}

type bomMetadata struct {
	Timestamp string    `json:"timestamp"`
	Tools     bomTools  `json:"tools"`
	Component component `json:"component"`
}

type bomTools struct {
	Components []component `json:"components"`
}

type component struct {
	BOMRef     string     `json:"bom-ref,omitempty"`
	Type       string     `json:"type"`
	Name       string     `json:"name"`
	Version    string     `json:"version,omitempty"`
	PURL       string     `json:"purl,omitempty"`
	Hashes     []hash     `json:"hashes,omitempty"`
	Licenses   []license  `json:"licenses,omitempty"`
	Properties []property `json:"properties,omitempty"`
}

type hash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

type license struct {
	Expression string `json:"expression"`
}

type property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type dependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn"`
}

// SBOM returns the CycloneDX document of an image Build made.
func SBOM(o Options, r Result) ([]byte, error) {
	bi := r.Build
	imageRef := "pkg:oci/" + pathBase(o.Name) + "@" + r.Digest.String() + "?repository_url=" + o.Name
	main := module(bi.Main, "application")
	main.Version = o.Version
	main.PURL = purl(bi.Main.Path, o.Version)
	main.BOMRef = main.PURL
	main.Licenses = []license{{Expression: o.License}}
	main.Properties = append(main.Properties, property{Name: "cdx:gomod:build:goVersion", Value: bi.GoVersion})
	for _, s := range bi.Settings {
		main.Properties = append(main.Properties, property{Name: "cdx:gomod:build:setting:" + s.Key, Value: s.Value})
	}
	doc := bom{
		BOMFormat:   "CycloneDX",
		SpecVersion: "1.5",
		Version:     1,
		// The serial number is derived from the image digest, so that the
		// same image always has the same SBOM.
		SerialNumber: "urn:uuid:" + uuidFrom(r.Digest.String()),
		Metadata: bomMetadata{
			Timestamp: o.Epoch.UTC().Format(time.RFC3339),
			Tools:     bomTools{Components: []component{{Type: "application", Name: "meshca imagebuild"}}},
			Component: component{BOMRef: imageRef, Type: "container", Name: o.Name, Version: o.Tag, PURL: imageRef},
		},
		Components: []component{main},
	}
	var deps []string
	for _, d := range bi.Deps {
		c := module(*d, "library")
		doc.Components = append(doc.Components, c)
		deps = append(deps, c.BOMRef)
	}
	doc.Dependencies = []dependency{
		{Ref: imageRef, DependsOn: []string{main.BOMRef}},
		{Ref: main.BOMRef, DependsOn: deps},
	}
	for _, ref := range deps {
		doc.Dependencies = append(doc.Dependencies, dependency{Ref: ref, DependsOn: []string{}})
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// module is one Go module as a component; a replaced module is described
// by its replacement, with the original path kept as a property.
func module(m debug.Module, typ string) component {
	used := m
	var props []property
	if m.Replace != nil {
		used = *m.Replace
		props = append(props, property{Name: "cdx:gomod:replaces", Value: m.Path + "@" + m.Version})
	}
	c := component{Type: typ, Name: used.Path, Version: used.Version, PURL: purl(used.Path, used.Version), Properties: props}
	c.BOMRef = c.PURL
	if used.Sum != "" {
		c.Properties = append(c.Properties, property{Name: "cdx:gomod:sum", Value: used.Sum})
		if h, ok := h1SHA256(used.Sum); ok {
			c.Hashes = []hash{{Alg: "SHA-256", Content: h}}
		}
	}
	return c
}

// h1SHA256 turns a go.sum "h1:" hash (base64 of the SHA-256 of the
// module's file list, golang.org/x/mod/sumdb/dirhash) into hex.
func h1SHA256(sum string) (string, bool) {
	b64, ok := strings.CutPrefix(sum, "h1:")
	if !ok {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != sha256.Size {
		return "", false
	}
	return hex.EncodeToString(raw), true
}

// purl is the package URL of a Go module (purl spec, type golang).
func purl(path, version string) string {
	p := "pkg:golang/" + path
	if version != "" && version != "(devel)" {
		p += "@" + version
	}
	return p + "?type=module"
}

func pathBase(name string) string {
	return name[strings.LastIndex(name, "/")+1:]
}

// uuidFrom is a UUID (version 5 layout) made from a SHA-256 of s.
func uuidFrom(s string) string {
	h := sha256.Sum256([]byte("meshca-sbom:" + s))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	x := hex.EncodeToString(h[:16])
	return fmt.Sprintf("%s-%s-%s-%s-%s", x[0:8], x[8:12], x[12:16], x[16:20], x[20:32])
}
