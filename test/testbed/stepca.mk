# Test-bed fragment: step-ca (smallstep/certificates), built from the Go
# module proxy and cached outside the checkout. The upstream-authority tests
# (ca/upstream) start their own step-ca through test/steptest and find the
# binary through the exported MESHCA_STEPCA_BIN (else at the cached path
# below); the peer benchmark (test/bench/peers/peers.mk) uses the same
# binary.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

STEPCA_VERSION := v0.30.2
STEPCA_DIR     := $(CACHE_DIR)/step-ca-$(STEPCA_VERSION)
STEPCA_BIN     := $(STEPCA_DIR)/step-ca
export MESHCA_STEPCA_BIN := $(STEPCA_BIN)

TESTBED_TARGETS += testbed-stepca
.PHONY: testbed-stepca

## testbed-stepca: build (once; the cached binary is reused) step-ca.
testbed-stepca: $(STEPCA_BIN)

# The binary depends on nothing in the checkout on purpose: a version bump
# changes its directory, and an existing binary is never rebuilt. It is
# installed into a temporary directory of its own (two builds may run at
# once; they share the Go build cache), which is then renamed: an
# interrupted build leaves nothing behind, and `mv -T` refuses to replace a
# directory another build has already put in place.
#
# step-ca without cgo: its YubiKey (PIV) support needs libpcsclite headers.
$(STEPCA_BIN):
	@mkdir -p $(CACHE_DIR)
	@echo "building step-ca $(STEPCA_VERSION) (cold: ~25 minutes on a loaded 2-core machine)"
	tmp=$$(mktemp -d $(STEPCA_DIR).tmp.XXXXXX) && chmod 755 "$$tmp" && trap 'rm -rf "$$tmp"' EXIT && \
		(cd "$$tmp" && GOWORK=off GOFLAGS= CGO_ENABLED=0 GOBIN="$$tmp" $(GO) install -trimpath \
			-ldflags '-s -w' github.com/smallstep/certificates/cmd/step-ca@$(STEPCA_VERSION)) && \
		{ mv -T "$$tmp" $(STEPCA_DIR) || test -x $@; }
