# meshca: `make test` does all set-up on a fresh machine (tools, test bed),
# then runs every test; CI runs the same target through .ci/run.

GO          ?= go
BIN         := bin/meshca
# The agent alone, for sidecars: small in memory (see docs/benchmarks.md).
# grpcnotrace leaves out gRPC's request tracing (and html/template); netgo
# the cgo DNS resolver, so that the binary is static and maps no libc.
AGENT_BIN   := bin/meshca-agent
AGENT_TAGS  := grpcnotrace,netgo
# How BASE's `make build` built the agent, for bench-agent-rss.
BASE_AGENT_TAGS ?= grpcnotrace
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
# Builds pass -buildvcs=auto: `meshca version` reads the commit from the Go
# build info (vcs.revision, vcs.time, vcs.modified) in a git checkout, even
# where GOFLAGS says -buildvcs=false, and a tree without git still builds.
# The tools module (tools/go.mod): helm and the image writer, kept out of
# the project's go.mod; see docs/kubernetes.md.
TOOLS       := $(GO) tool -modfile=tools/go.mod
HELM        := $(TOOLS) helm
# One build configuration for everything but the race detector: static
# (CGO_ENABLED=0) and -trimpath, as release images are built. vet,
# staticcheck, `make build`, the end-to-end tests, the binaries and images
# tests build (internal/testkit.GoCommand) and the test bed's Go builds then
# share one compile cache: a cold `make test` compiles the module graph once
# plainly and once for the race detector (which needs cgo), not once per
# configuration (docs/benchmarks.md, "Cold `make test`").
export CGO_ENABLED := 0
export GOFLAGS += -trimpath
# Heavy tools and test-bed builds are cached outside the checkout.
CACHE_DIR   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/meshca-testbed
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CACHE_DIR)/staticcheck-$(STATICCHECK_VERSION)
BENCHTIME   ?= 3s
FUZZTIME    ?= 30s

.PHONY: all build images images-verify manifests test unit e2e interop lint bench bench-agent-rss bench-sidecar-rss fuzz testbed testbed-parts tools generate clean

# Each test-bed component (PostgreSQL, kube-apiserver, Vault, ...) lives in a
# fragment test/testbed/NAME.mk that defines a target `testbed-NAME`, adds it
# to TESTBED_TARGETS and exports what tests need (addresses, binary paths).
TESTBED_TARGETS :=
# The parts build in parallel (`make testbed`); apt-get takes the package
# lists and dpkg locks and fails at once when another holds them, so every
# fragment runs it through this lock.
APT_GET = flock $(CACHE_DIR)/apt.lock apt-get
-include test/testbed/*.mk
# Benchmarks against other CAs (built on demand, not by `make test`).
-include test/bench/peers/peers.mk

all: build

build:
	$(GO) build -buildvcs=auto -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/meshca
	$(GO) build -buildvcs=auto -tags $(AGENT_TAGS) -ldflags '$(LDFLAGS)' -o $(AGENT_BIN) ./cmd/meshca-agent

## images: OCI archives of meshca, meshca-agent and the pause sandbox
## image in IMAGES_DIR, each with a CycloneDX SBOM; no daemon, no registry.
## Reproducible: static binaries, every time SOURCE_DATE_EPOCH (the
## commit's), so one commit gives the same bytes (images-verify checks).
IMAGES_DIR        ?= bin/images
IMAGE_REPO        ?= localhost
IMAGE_TAG         ?= $(VERSION)
PAUSE_TAG         ?= 3.10
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_GOBUILD     := CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -ldflags '$(LDFLAGS) -s -w'
images:
	@mkdir -p $(IMAGES_DIR)
	$(IMAGE_GOBUILD) -o $(IMAGES_DIR)/meshca ./cmd/meshca
	$(IMAGE_GOBUILD) -tags $(AGENT_TAGS) -o $(IMAGES_DIR)/meshca-agent ./cmd/meshca-agent
	cd tools && CGO_ENABLED=0 GOWORK=off $(GO) build -trimpath -buildvcs=false -o ../$(IMAGES_DIR)/pause ./pause
	cd tools && GOWORK=off $(GO) build -o ../$(IMAGES_DIR)/imagebuild ./imagebuild
	@for img in meshca meshca-agent pause; do \
		tag=$(IMAGE_TAG); [ $$img = pause ] && tag=$(PAUSE_TAG); \
		SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(IMAGES_DIR)/imagebuild -name $(IMAGE_REPO)/$$img -tag $$tag \
			-binary $(IMAGES_DIR)/$$img -version $(VERSION) -revision $(REVISION) -license-file LICENSE \
			-out $(IMAGES_DIR)/$$img.oci.tar -sbom $(IMAGES_DIR)/$$img.cdx.json || exit 1; \
	done

## images-verify: build the images twice and compare the archives' bytes.
images-verify:
	@$(MAKE) --no-print-directory images IMAGES_DIR=$(IMAGES_DIR)/verify-a >/dev/null
	@$(MAKE) --no-print-directory images IMAGES_DIR=$(IMAGES_DIR)/verify-b >/dev/null
	@for img in meshca meshca-agent pause; do \
		cmp $(IMAGES_DIR)/verify-a/$$img.oci.tar $(IMAGES_DIR)/verify-b/$$img.oci.tar || exit 1; \
		cmp $(IMAGES_DIR)/verify-a/$$img.cdx.json $(IMAGES_DIR)/verify-b/$$img.cdx.json || exit 1; \
		echo "$$img: $$(sha256sum < $(IMAGES_DIR)/verify-a/$$img.oci.tar | cut -c1-64) twice"; \
	done

## manifests: regenerate what is made from the Helm chart (plain manifests
## and kustomize base in deploy/kubernetes/, the chart's copy of the alert
## rules); test/chart fails when they are out of date.
manifests:
	GOWORK=off $(GO) run ./test/chart/genmanifests

## test: lint, then unit + integration (race detector), then the end-to-end
## and interop suites side by side: both mostly wait on the processes they
## start (a third of the CPU or less), so together they take about the
## longer one's time; each suite's output is printed whole when it ends.
test: testbed lint build unit
	@$(MAKE) --no-print-directory -j2 --output-sync=target e2e interop

# The race detector needs cgo. Tests that run meshca take the binaries
# `make build` made rather than building their own.
RACE_TEST   := CGO_ENABLED=1 $(GO) test -race -count=1
unit: build
	MESHCA_BIN=$(abspath $(BIN)) MESHCA_AGENT_BIN=$(abspath $(AGENT_BIN)) \
		$(RACE_TEST) -timeout 30m $$($(GO) list ./... | grep -v -e /test/e2e -e /test/multicluster)
	cd test/bench/peers && GOWORK=off $(RACE_TEST) ./...
	cd tools && GOWORK=off $(GO) test -count=1 ./...

e2e: build
	MESHCA_BIN=$(abspath $(BIN)) MESHCA_AGENT_BIN=$(abspath $(AGENT_BIN)) $(GO) test -count=1 -timeout 30m ./test/e2e/... ./test/multicluster/...

interop: build testbed-istio
	cd test/interop && MESHCA_BIN=$(abspath $(BIN)) GOWORK=off $(GO) test -count=1 ./...

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test/interop && GOWORK=off $(GO) vet ./...
	cd test/bench/peers && GOWORK=off $(GO) vet ./...
	cd tools && GOWORK=off $(GO) vet ./...
	$(STATICCHECK) ./...

## bench: benchmarks that feed docs/benchmarks.md.
bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count 1 ./issuer/ ./store/... ./attest/ ./agent/
	$(GO) test -run '^$$' -bench . -benchtime 20x -count 1 ./test/bench/
	$(GO) test -run '^$$' -bench RenewalStorm -benchtime 1x -count 1 ./test/bench/storm/
	$(GO) test -run '^$$' -bench IssuanceRatio -benchtime 10x -count 1 ./test/e2e/

## bench-agent-rss: resident memory of meshca-agent with 10 SDS streams, this checkout
## against BASE (a commit; built in a temporary worktree with BASE_AGENT_TAGS) in the same run.
bench-agent-rss: build
	@test -n "$(BASE)" || { echo "usage: make bench-agent-rss BASE=<commit>"; exit 2; }
	tmp=$$(mktemp -d) && git worktree add --detach $$tmp/src $(BASE) >/dev/null && \
	(cd $$tmp/src && $(GO) build -trimpath -tags $(BASE_AGENT_TAGS) -o $$tmp/meshca-agent ./cmd/meshca-agent); \
	st=$$?; git worktree remove --force $$tmp/src; [ $$st -eq 0 ] && \
	MESHCA_BIN=$(abspath $(BIN)) MESHCA_AGENT_BIN=$(abspath $(AGENT_BIN)) MESHCA_AGENT_BASE_BIN=$$tmp/meshca-agent \
		$(GO) test -count=1 -run '^$$' -bench AgentRSS -benchtime 3x -v ./test/e2e/; \
	st=$$?; rm -rf $$tmp; exit $$st

## bench-sidecar-rss: resident memory of meshca-agent and of Istio's pilot-agent serving the
## same identity to 10 SDS streams, side by side in one run (docs/benchmarks.md).
bench-sidecar-rss: build testbed-istio
	cd test/interop && MESHCA_BIN=$(abspath $(BIN)) MESHCA_AGENT_BIN=$(abspath $(AGENT_BIN)) GOWORK=off \
		$(GO) test -count=1 -run '^$$' -bench SidecarRSS -benchtime 3x -v .

## fuzz: run each fuzz target for FUZZTIME (the seed corpora also run in `make test`).
fuzz:
	$(GO) test ./issuer -run '^$$' -fuzz '^FuzzCheckCSR$$' -fuzztime $(FUZZTIME)
	$(GO) test ./attest -run '^$$' -fuzz '^FuzzJWKSAttest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./ca -run '^$$' -fuzz '^FuzzLeafDER$$' -fuzztime $(FUZZTIME)

## testbed: install what the tests need and is not a Go module. The parts
## build in parallel, so a cold set-up takes as long as its slowest part
## (docs/benchmarks.md, "Test bed: cold set-up time"); TESTBED_JOBS bounds it.
TESTBED_JOBS ?= 4
testbed:
	@$(MAKE) --no-print-directory -j$(TESTBED_JOBS) testbed-parts

testbed-parts: $(TESTBED_TARGETS)
	@command -v openssl >/dev/null || { echo "installing openssl"; mkdir -p $(CACHE_DIR); \
		($(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq openssl) >/dev/null; }

tools: $(STATICCHECK)

## generate: regenerate api/ (protobuf + gRPC Go code; the output is committed).
BUF_VERSION := v1.59.0
GENTOOLS    := $(CACHE_DIR)/gentools-$(BUF_VERSION)
generate:
	@test -x $(GENTOOLS)/protoc-gen-go-grpc || { mkdir -p $(GENTOOLS) && \
		GOBIN=$(GENTOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION) && \
		GOBIN=$(GENTOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 && \
		GOBIN=$(GENTOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0; }
	cd api && PATH=$(GENTOOLS):$$PATH buf lint && PATH=$(GENTOOLS):$$PATH buf generate

$(STATICCHECK):
	@mkdir -p $(CACHE_DIR)
	GOBIN=$(CACHE_DIR)/tmp-gobin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(CACHE_DIR)/tmp-gobin/staticcheck $@

clean:
	rm -rf bin
