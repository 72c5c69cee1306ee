package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Packages meshca-agent must not link in any build. Each was once linked
// and made the sidecar bigger in memory (see docs/benchmarks.md, "RSS of
// meshca-agent"): package ca (the signing core), step's certificate
// templates (x509util → sprig), step's PEM and key helpers (they bring
// golang.org/x/crypto/ssh, scrypt and NaCl), and the generated Istio CA API
// with the legacy protobuf runtime and reflect/protodesc that it needs
// (agent/istioapi.go encodes the one call by hand); smallstep's certificate
// authority services and the Vault client the upstream PKIs use
// (ca/upstream) never were, and must not be.
var forbiddenAlways = []string{
	"github.com/meshca/meshca/ca",
	"github.com/smallstep/certificates",
	"github.com/hashicorp/vault",
	"github.com/Masterminds/sprig",
	"go.step.sm/crypto",
	"golang.org/x/crypto/ssh",
	"istio.io/api",
	"github.com/golang/protobuf",
	"google.golang.org/protobuf/reflect/protodesc",
}

// maxAgentPackages bounds what meshca-agent links, as built: every package's
// code and init faults its pages into the sidecar's resident memory. 384
// with JWT-SVIDs on the Workload API (go-jose and go-spiffe's jwtsvid:
// +10); raise it only with a bench-agent-rss figure (docs/benchmarks.md).
const maxAgentPackages = 390

// TestAgentLinksNoSigningCode keeps the sidecar small: the agent binary must
// not link the packages of forbiddenAlways in any build. Built as `make
// build` builds it (-tags grpcnotrace,netgo) it must also not link
// html/template (gRPC's request tracing) nor runtime/cgo (the C resolver,
// which would map the C library), and stay under maxAgentPackages.
func TestAgentLinksNoSigningCode(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		forbidden   []string
		maxPackages int
	}{
		{
			name:        "as built",
			args:        []string{"-tags", "grpcnotrace,netgo"},
			forbidden:   append([]string{"html/template", "runtime/cgo"}, forbiddenAlways...),
			maxPackages: maxAgentPackages,
		},
		{
			name:      "default tags",
			forbidden: forbiddenAlways,
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
			if tc.maxPackages > 0 && len(deps) > tc.maxPackages {
				t.Errorf("meshca-agent links %d packages, more than %d", len(deps), tc.maxPackages)
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
