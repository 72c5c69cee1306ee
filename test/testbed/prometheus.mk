# Test-bed fragment: Prometheus's `prometheus` server and `promtool`, taken
# from Debian's `prometheus` package. The package is downloaded and
# unpacked, never installed: no service is started and no system file
# changes. The binaries are cached outside the checkout; tests
# find them through the exported MESHCA_TEST_PROMTOOL and
# MESHCA_TEST_PROMETHEUS (test/promtest), else at the cached paths below.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

# The Debian version (bookworm); upstream Prometheus 2.42.0.
PROMETHEUS_DEB_VERSION := 2.42.0+ds-5+deb12u1
PROMETHEUS_DIR := $(CACHE_DIR)/prometheus-$(PROMETHEUS_DEB_VERSION)
export MESHCA_TEST_PROMTOOL ?= $(PROMETHEUS_DIR)/usr/bin/promtool
export MESHCA_TEST_PROMETHEUS ?= $(PROMETHEUS_DIR)/usr/bin/prometheus

TESTBED_TARGETS += testbed-prometheus
.PHONY: testbed-prometheus

## testbed-prometheus: unpack (once; the cached copy is reused) prometheus and promtool.
testbed-prometheus: $(PROMETHEUS_DIR)/usr/bin/promtool

# The unpacked tree depends on nothing in the checkout on purpose: a version
# bump changes its name, and an existing tree is never replaced. It is
# unpacked into a temporary directory of its own (two `make test` runs may
# unpack at once) and renamed, so an interrupted run leaves nothing behind.
# `apt-get download` needs the package lists; they are refreshed only when
# the first attempt fails.
$(PROMETHEUS_DIR)/usr/bin/promtool:
	@mkdir -p $(CACHE_DIR)
	@echo "unpacking Debian prometheus $(PROMETHEUS_DEB_VERSION) (no service is started)"
	@tmp=$$(mktemp -d $(CACHE_DIR)/prometheus.tmp.XXXXXX) && trap 'rm -rf "$$tmp"' EXIT && \
		cd "$$tmp" && \
		{ $(APT_GET) download -qq prometheus=$(PROMETHEUS_DEB_VERSION) 2>/dev/null || \
			{ $(APT_GET) update -qq >/dev/null && $(APT_GET) download -qq prometheus=$(PROMETHEUS_DEB_VERSION); }; } && \
		dpkg -x prometheus_*.deb "$$tmp/root" && \
		"$$tmp/root/usr/bin/promtool" --version >/dev/null && \
		{ [ -e $(PROMETHEUS_DIR) ] || mv "$$tmp/root" $(PROMETHEUS_DIR); }
	@test -x $@
