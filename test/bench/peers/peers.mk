# Peer benchmark fragment: SPIRE server, built from the Go module proxy and
# cached outside the checkout like the test bed (test/testbed/*.mk), and
# `make bench-peers`, which measures it and step-ca side by side with meshca
# (test/bench/peers, docs/benchmarks.md). step-ca is a test-bed part
# (test/testbed/stepca.mk, included before this file, defines STEPCA_BIN);
# nothing here is part of `make test`: the driver finds the binaries through
# its flags.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

SPIRE_VERSION  := v1.13.3
SPIRE_DIR      := $(CACHE_DIR)/spire-$(SPIRE_VERSION)
SPIRE_BIN      := $(SPIRE_DIR)/spire-server
# Driver flags; see `go run ./test/bench/peers -h` (from that directory).
PEERS_FLAGS    ?= -rounds 5 -ops 2000

.PHONY: bench-peers bench-peers-tools

## bench-peers-tools: build (once; cached binaries are reused) step-ca and spire-server.
bench-peers-tools: $(STEPCA_BIN) $(SPIRE_BIN)

# The binary depends on nothing in the checkout on purpose: a version bump
# changes its directory, and an existing binary is never rebuilt. It is
# installed into a temporary directory of its own, then renamed (see
# test/testbed/stepca.mk, which builds step-ca the same way).
#
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
