# Test-bed fragment: HashiCorp Vault, built from the Go module proxy by the
# pinned module test/testbed/vault (see shared TESTBED.md, "Vault") and cached
# outside the checkout. The Transit signer tests (ca/vault) find the binary
# through the exported MESHCA_TEST_VAULT_BIN (else at the cached path below)
# and start their own Vault servers on loopback.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

VAULT_VERSION := v1.21.0
VAULT_BIN := $(CACHE_DIR)/vault-$(VAULT_VERSION)
export MESHCA_TEST_VAULT_BIN := $(VAULT_BIN)

TESTBED_TARGETS += testbed-vault
.PHONY: testbed-vault

## testbed-vault: build (once; the cached binary is reused) the Vault server.
testbed-vault: $(VAULT_BIN)

# The binary depends on nothing in the checkout on purpose: a version bump
# changes its name, and an existing binary is never rebuilt. It is built to a
# temporary name of its own (two `make test` runs may build at once; they
# share the Go build cache) and renamed, so an interrupted build leaves
# nothing behind.
$(VAULT_BIN):
	@mkdir -p $(CACHE_DIR)
	@echo "building vault $(VAULT_VERSION) (cold: 15-20 minutes on an idle 2-core machine)"
	tmp=$@.tmp.$$$$ && trap 'rm -f "$$tmp"' EXIT && \
		(cd test/testbed/vault && GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath \
			-ldflags '-s -w' -o "$$tmp" github.com/hashicorp/vault) && \
		mv -f "$$tmp" $@

## bench-vault: root signing through Vault Transit vs. an in-memory key (docs/benchmarks.md).
.PHONY: bench-vault
bench-vault: testbed-vault
	$(GO) test ./ca/vault -run '^$$' -bench BenchmarkVaultSign -benchtime $(BENCHTIME) -count 2
