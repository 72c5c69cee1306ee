# Peer benchmark fragment: step-ca and SPIRE server, built from the Go
# module proxy and cached outside the checkout like the test bed
# (test/testbed/*.mk), and `make bench-peers`, which measures them side by
# side with meshca (test/bench/peers, docs/benchmarks.md). Nothing here is
# part of `make test`: the driver finds the binaries through its flags.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

STEPCA_VERSION := v0.30.2
STEPCA_DIR     := $(CACHE_DIR)/step-ca-$(STEPCA_VERSION)
STEPCA_BIN     := $(STEPCA_DIR)/step-ca
SPIRE_VERSION  := v1.13.3
SPIRE_DIR      := $(CACHE_DIR)/spire-$(SPIRE_VERSION)
SPIRE_BIN      := $(SPIRE_DIR)/spire-server
# Driver flags; see `go run ./test/bench/peers -h` (from that directory).
PEERS_FLAGS    ?= -rounds 5 -ops 2000

.PHONY: bench-peers bench-peers-tools

## bench-peers-tools: build (once; cached binaries are reused) step-ca and spire-server.
bench-peers-tools: $(STEPCA_BIN) $(SPIRE_BIN)

# Each binary depends on nothing in the checkout on purpose: a version bump
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

# SPIRE publishes no version `go install pkg@version` accepts here, so the
# pinned module test/bench/peers/tools/spire holds it as a tool dependency
# (`go get -tool github.com/spiffe/spire/cmd/spire-server@v1.13.3`). cgo is
# needed for its SQLite datastore (go-sqlite3).
$(SPIRE_BIN):
	@mkdir -p $(CACHE_DIR)
	@echo "building spire-server $(SPIRE_VERSION) (cold: ~50 minutes on a loaded 2-core machine)"
	tmp=$$(mktemp -d $(SPIRE_DIR).tmp.XXXXXX) && chmod 755 "$$tmp" && trap 'rm -rf "$$tmp"' EXIT && \
		(cd test/bench/peers/tools/spire && GOWORK=off GOFLAGS= GOBIN="$$tmp" $(GO) install -mod=readonly \
			-trimpath -ldflags '-s -w' github.com/spiffe/spire/cmd/spire-server) && \
		{ mv -T "$$tmp" $(SPIRE_DIR) || test -x $@; }

## bench-peers: meshca (SQLite, fresh tokens, PostgreSQL) against step-ca and SPIRE, side by side.
bench-peers: build bench-peers-tools
	cd test/bench/peers && GOWORK=off $(GO) run . -meshca $(abspath $(BIN)) \
		-step-ca $(STEPCA_BIN) -spire-server $(SPIRE_BIN) $(PEERS_FLAGS)
