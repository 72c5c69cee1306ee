# Test-bed fragment: kube-apiserver and etcd, built from the Go module proxy
# by the pinned module test/testbed/kube (see shared TESTBED.md) and cached
# outside the checkout. Tests find the binaries through the exported
# MESHCA_KUBE_APISERVER_BIN and MESHCA_ETCD_BIN (test/kubetest).

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

KUBE_VERSION := v1.37.2
ETCD_VERSION := v3.7.0
KUBE_APISERVER_BIN := $(CACHE_DIR)/kube-apiserver-$(KUBE_VERSION)
ETCD_BIN := $(CACHE_DIR)/etcd-$(ETCD_VERSION)
export MESHCA_KUBE_APISERVER_BIN ?= $(KUBE_APISERVER_BIN)
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
# changes their names, and an existing binary is never rebuilt. Each is built
# to a temporary name and moved, so an interrupted build leaves nothing behind.
$(KUBE_APISERVER_BIN):
	@mkdir -p $(CACHE_DIR)
	@echo "building kube-apiserver $(KUBE_VERSION) (cold: 10+ minutes)"
	cd test/testbed/kube && GOWORK=off CGO_ENABLED=0 $(GO) build -mod=readonly -trimpath \
		-ldflags '$(KUBE_LDFLAGS)' -o $@.tmp k8s.io/kubernetes/cmd/kube-apiserver
	mv $@.tmp $@

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
