# Test-bed fragment: helm v4 and kustomize, Go tools of the tools module
# (tools/go.mod, see docs/kubernetes.md). `go tool` compiles them on first
# use and keeps the executables in the Go build cache; this builds them
# with the other test-bed parts, in parallel, rather than inside the first
# test that needs them (test/chart, cmd/meshca's TestChartConfigs). A
# cold build takes about 20 minutes on a loaded 2-core machine.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

TESTBED_TARGETS += testbed-tools
.PHONY: testbed-tools

## testbed-tools: compile (once; the Go build cache keeps them) helm and kustomize.
testbed-tools:
	@GOWORK=off $(GO) tool -modfile=tools/go.mod helm version --short >/dev/null
	@GOWORK=off $(GO) tool -modfile=tools/go.mod kustomize version >/dev/null
