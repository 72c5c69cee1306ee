# Test-bed fragment: Istio's sidecar agent `pilot-agent`, built from the Go
# module proxy by the pinned module test/testbed/istio (the same istio.io/istio
# version as test/interop) and cached outside the checkout. The interop tests
# (test/interop) find it through the exported MESHCA_PILOT_AGENT_BIN and run it
# without Envoy and without istiod, against meshca alone.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

# istio.io/istio has no release tags on its main branch: the version is the
# pseudo-version pinned in test/testbed/istio/go.mod and test/interop/go.mod.
ISTIO_VERSION := v0.0.0-20260827124520-eed52ebb66ad
PILOT_AGENT_BIN := $(CACHE_DIR)/pilot-agent-$(ISTIO_VERSION)
export MESHCA_PILOT_AGENT_BIN ?= $(PILOT_AGENT_BIN)

TESTBED_TARGETS += testbed-istio
.PHONY: testbed-istio

## testbed-istio: build (once; the cached binary is reused) Istio's pilot-agent.
testbed-istio: $(PILOT_AGENT_BIN)

# The binary depends on nothing in the checkout on purpose: a version bump
# changes its name, and an existing binary is never rebuilt. It is built to a
# temporary name of its own (two `make test` runs may build at once; they
# share the Go build cache) and renamed, so an interrupted build leaves
# nothing behind.
$(PILOT_AGENT_BIN):
	@mkdir -p $(CACHE_DIR)
	@echo "building pilot-agent istio $(ISTIO_VERSION) (cold: see docs/benchmarks.md)"
	tmp=$@.tmp.$$$$ && trap 'rm -f "$$tmp"' EXIT && \
		(cd test/testbed/istio && GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath \
			-ldflags '-s -w' -o "$$tmp" istio.io/istio/pilot/cmd/pilot-agent) && \
		mv -f "$$tmp" $@
