# Test-bed fragment: a real single-node Kubernetes cluster. The control plane
# and node binaries (kube-controller-manager, kube-scheduler, kubelet) are
# built from the pinned module test/testbed/kube, like kube-apiserver in
# kube.mk; the container runtime (containerd v2, runc) from the pinned module
# test/testbed/node; the pod sandbox ("pause") image from tools/pause, packed
# by tools/imagebuild (what `make images` uses, in the tools module).
# Everything is cached outside the checkout under versioned names. Tests
# (test/nodetest) find the binaries through the exported MESHCA_* variables.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

# KUBELET_BIN, KUBE_CONTROLLER_MANAGER_BIN and KUBE_SCHEDULER_BIN (and their
# rule, one `go build` with kube-apiserver) come from kube.mk, included
# before this file.

# The container runtime, pinned in test/testbed/node/go.mod. containerd's
# directory holds containerd, containerd-shim-runc-v2 and ctr.
CONTAINERD_VERSION := v2.4.2
RUNC_VERSION       := v1.5.3
CONTAINERD_DIR     := $(CACHE_DIR)/containerd-$(CONTAINERD_VERSION)
RUNC_BIN           := $(CACHE_DIR)/runc-$(RUNC_VERSION)
export MESHCA_CONTAINERD_DIR ?= $(CONTAINERD_DIR)
export MESHCA_RUNC_BIN ?= $(RUNC_BIN)

# The pod sandbox image and the packer that made it are our own code
# (tools/imagebuild, tools/pause): their cached names carry a hash of their
# sources, so a change builds new ones. Tests pack their own images with the
# same packer (MESHCA_IMAGEBUILD_BIN).
NODE_TOOLS_HASH := $(shell cat tools/go.mod tools/go.sum $(filter-out %_test.go,$(wildcard \
	tools/pause/*.go tools/imagebuild/*.go)) 2>/dev/null | sha256sum | cut -c1-12)
IMAGEBUILD_BIN  := $(CACHE_DIR)/imagebuild-$(NODE_TOOLS_HASH)
PAUSE_IMAGE     := $(CACHE_DIR)/pause-image-$(NODE_TOOLS_HASH).tar
export MESHCA_IMAGEBUILD_BIN ?= $(IMAGEBUILD_BIN)
export MESHCA_PAUSE_IMAGE ?= $(PAUSE_IMAGE)

TESTBED_TARGETS += testbed-node
.PHONY: testbed-node

## testbed-node: build (once; cached) kubelet, kube-controller-manager,
## kube-scheduler, containerd, runc and the pause image.
testbed-node: $(KUBELET_BIN) $(KUBE_CONTROLLER_MANAGER_BIN) $(KUBE_SCHEDULER_BIN) \
	$(CONTAINERD_DIR) $(RUNC_BIN) $(IMAGEBUILD_BIN) $(PAUSE_IMAGE)

# containerd and its shim as upstream's Makefile builds them static (the
# shim without gRPC); ctr imports the test images. A directory cannot be
# replaced atomically: if another build renamed its own first, keep that.
CONTAINERD_PKG := github.com/containerd/containerd/v2
CONTAINERD_LDFLAGS := -s -w -X $(CONTAINERD_PKG)/version.Version=$(CONTAINERD_VERSION) \
	-X $(CONTAINERD_PKG)/version.Package=github.com/containerd/containerd
$(CONTAINERD_DIR):
	@mkdir -p $(CACHE_DIR)
	@echo "building containerd $(CONTAINERD_VERSION)"
	tmp=$@.tmp.$$$$ && trap 'rm -rf "$$tmp"' EXIT && mkdir -p "$$tmp" && cd test/testbed/node && \
		GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath -tags urfave_cli_no_docs \
			-ldflags '$(CONTAINERD_LDFLAGS)' -o "$$tmp/" $(CONTAINERD_PKG)/cmd/containerd $(CONTAINERD_PKG)/cmd/ctr && \
		GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath -tags urfave_cli_no_docs,no_grpc \
			-ldflags '$(CONTAINERD_LDFLAGS)' -o "$$tmp/" $(CONTAINERD_PKG)/cmd/containerd-shim-runc-v2 && \
		{ mv -T "$$tmp" $@ 2>/dev/null || test -x $@/containerd-shim-runc-v2; }

# runc needs cgo (its nsenter is C) and libseccomp: without the seccomp tag
# it refuses every container whose spec has a seccomp profile, which is what
# `seccompProfile: RuntimeDefault` (a hardened pod) gives it.
$(RUNC_BIN):
	@mkdir -p $(CACHE_DIR)
	@test -e /usr/include/seccomp.h || { echo "installing libseccomp-dev"; \
		($(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq libseccomp-dev) >/dev/null; }
	@echo "building runc $(RUNC_VERSION)"
	tmp=$@.tmp.$$$$ && trap 'rm -f "$$tmp"' EXIT && \
		(cd test/testbed/node && GOWORK=off CGO_ENABLED=1 $(GO) build -mod=readonly -trimpath -buildmode=pie \
			-tags seccomp,urfave_cli_no_docs -ldflags '-s -w' -o "$$tmp" github.com/opencontainers/runc) && \
		mv -f "$$tmp" $@

$(IMAGEBUILD_BIN):
	@mkdir -p $(CACHE_DIR)
	tmp=$@.tmp.$$$$ && trap 'rm -f "$$tmp"' EXIT && \
		(cd tools && GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath -o "$$tmp" ./imagebuild) && \
		mv -f "$$tmp" $@

# Named localhost/meshca-pause:HASH, dated at the epoch: the same sources
# give the same image.
$(PAUSE_IMAGE): $(IMAGEBUILD_BIN)
	tmp=$(CACHE_DIR)/pause.tmp.$$$$ && trap 'rm -rf "$$tmp"' EXIT && mkdir -p "$$tmp" && \
		(cd tools && GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath -buildvcs=false \
			-ldflags '-s -w' -o "$$tmp/pause" ./pause) && \
		SOURCE_DATE_EPOCH=0 $(IMAGEBUILD_BIN) -name localhost/meshca-pause -tag $(NODE_TOOLS_HASH) \
			-binary "$$tmp/pause" -version $(NODE_TOOLS_HASH) -revision $(NODE_TOOLS_HASH) \
			-out "$$tmp/image.tar" >/dev/null && \
		mv -f "$$tmp/image.tar" $@
