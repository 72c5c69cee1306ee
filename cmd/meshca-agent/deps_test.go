package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestAgentLinksNoSigningCode keeps the sidecar small: the agent binary must
// not link package ca (the signing core, with ca/upstream), smallstep's
// certificate authority services (github.com/smallstep/certificates),
// step's certificate templates (x509util → sprig) or html/template. Built as `make build` builds it (with
// -tags grpcnotrace) none of them may appear; without the tag gRPC's request
// tracing brings in html/template, but still neither ca nor sprig.
func TestAgentLinksNoSigningCode(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		forbidden []string
	}{
		{
			name:      "as built",
			args:      []string{"-tags", "grpcnotrace"},
			forbidden: []string{"github.com/meshca/meshca/ca", "github.com/smallstep/certificates", "github.com/Masterminds/sprig", "html/template"},
		},
		{
			name:      "default tags",
			forbidden: []string{"github.com/meshca/meshca/ca", "github.com/smallstep/certificates", "github.com/Masterminds/sprig"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deps := listDeps(t, tc.args...)
			if !slices.Contains(deps, "github.com/meshca/meshca/trust") {
				t.Fatalf("go list -deps printed no github.com/meshca/meshca/trust; is the output parsed right? %d packages", len(deps))
			}
			for _, dep := range deps {
				for _, bad := range tc.forbidden {
					if dep == bad || strings.HasPrefix(dep, bad+"/") {
						t.Errorf("meshca-agent links %s", dep)
					}
				}
			}
		})
	}
}

// listDeps returns the import paths of every package meshca-agent links.
func listDeps(t *testing.T, args ...string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the agent's dependencies: %v", err)
	}
	cmd := exec.Command(goBin, append(append([]string{"list", "-deps"}, args...), ".")...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	return strings.Fields(string(out))
}
