# Test-bed fragment: etcd and the Kubernetes binaries (kube-apiserver, and
# for the node in node.mk kubelet, kube-controller-manager, kube-scheduler),
# built from the Go module proxy by the pinned module test/testbed/kube (see
# shared TESTBED.md) and cached outside the checkout. Tests find the
# binaries through the exported MESHCA_*_BIN variables (test/kubetest,
# test/nodetest).

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

KUBE_VERSION := v1.37.2
ETCD_VERSION := v3.7.0
KUBE_APISERVER_BIN := $(CACHE_DIR)/kube-apiserver-$(KUBE_VERSION)
KUBELET_BIN := $(CACHE_DIR)/kubelet-$(KUBE_VERSION)
KUBE_CONTROLLER_MANAGER_BIN := $(CACHE_DIR)/kube-controller-manager-$(KUBE_VERSION)
KUBE_SCHEDULER_BIN := $(CACHE_DIR)/kube-scheduler-$(KUBE_VERSION)
KUBE_COMMANDS := kube-apiserver kubelet kube-controller-manager kube-scheduler
ETCD_BIN := $(CACHE_DIR)/etcd-$(ETCD_VERSION)
export MESHCA_KUBE_APISERVER_BIN ?= $(KUBE_APISERVER_BIN)
export MESHCA_KUBELET_BIN ?= $(KUBELET_BIN)
export MESHCA_KUBE_CONTROLLER_MANAGER_BIN ?= $(KUBE_CONTROLLER_MANAGER_BIN)
export MESHCA_KUBE_SCHEDULER_BIN ?= $(KUBE_SCHEDULER_BIN)
export MESHCA_ETCD_BIN ?= $(ETCD_BIN)

KUBE_VERSION_PKG := k8s.io/component-base/version
KUBE_LDFLAGS := -s -w -X $(KUBE_VERSION_PKG).gitVersion=$(KUBE_VERSION) \
	-X $(KUBE_VERSION_PKG).gitMajor=1 -X $(KUBE_VERSION_PKG).gitMinor=37 \
	-X $(KUBE_VERSION_PKG).gitTreeState=clean

TESTBED_TARGETS += testbed-kube
.PHONY: testbed-kube

## testbed-kube: build (once; the cached binaries are reused) kube-apiserver and etcd.
testbed-kube: $(KUBE_APISERVER_BIN) $(ETCD_BIN)

# The binaries depend on nothing in the checkout on purpose: a version bump
# changes their names, and an existing binary is never rebuilt. The four
# Kubernetes commands share most of their packages, so they are built by one
# `go build` (grouped target): one invocation compiles each shared package
# once, where four concurrent ones (make -j) each compile it again because
# none finds it in the build cache yet. They are built into a temporary
# directory of their own (two `make test` runs may build at once) and moved,
# so an interrupted build leaves nothing behind.
$(KUBE_APISERVER_BIN) $(KUBELET_BIN) $(KUBE_CONTROLLER_MANAGER_BIN) $(KUBE_SCHEDULER_BIN) &:
	@mkdir -p $(CACHE_DIR)
	@echo "building $(KUBE_COMMANDS) $(KUBE_VERSION) (cold: see docs/benchmarks.md)"
	tmp=$(CACHE_DIR)/kube.tmp.$$$$ && trap 'rm -rf "$$tmp"' EXIT && mkdir -p "$$tmp" && \
		(cd test/testbed/kube && GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath \
			-ldflags '$(KUBE_LDFLAGS)' -o "$$tmp/" $(addprefix k8s.io/kubernetes/cmd/,$(KUBE_COMMANDS))) && \
		for c in $(KUBE_COMMANDS); do mv -f "$$tmp/$$c" $(CACHE_DIR)/$$c-$(KUBE_VERSION) || exit 1; done

$(ETCD_BIN):
	@mkdir -p $(CACHE_DIR)
	@echo "building etcd $(ETCD_VERSION)"
	cd test/testbed/kube && GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath \
		-ldflags '-s -w' -o $@.tmp go.etcd.io/etcd/server/v3
	mv $@.tmp $@

## bench-kube: issuance with a cache hit vs. a TokenReview round trip (docs/benchmarks.md).
.PHONY: bench-kube
bench-kube: testbed-kube
	$(GO) test -run '^$$' -bench BenchmarkKubeIssuance -benchtime $(BENCHTIME) -count 1 ./test/kube/
