# Test-bed fragment: PostgreSQL 15 (see shared TESTBED.md). Tests create their
# own database on the server at MESHCA_TEST_POSTGRES_DSN and drop it afterwards
# (store/postgres/pgtest); fault tests start private throw-away clusters with
# the server binaries in MESHCA_TEST_POSTGRES_BIN.

# Fragments are included before the main Makefile's first target: keep `all`
# the default goal.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

PG_MAJOR := 15
PG_BIN   := /usr/lib/postgresql/$(PG_MAJOR)/bin
PG_HOST  := 127.0.0.1
PG_PORT  := 5432
PG_HBA   := /etc/postgresql/$(PG_MAJOR)/main/pg_hba.conf
export MESHCA_TEST_POSTGRES_DSN ?= postgres://postgres@$(PG_HOST):$(PG_PORT)/postgres?sslmode=disable
export MESHCA_TEST_POSTGRES_BIN ?= $(PG_BIN)

TESTBED_TARGETS += testbed-postgres
.PHONY: testbed-postgres

## testbed-postgres: PostgreSQL answering at MESHCA_TEST_POSTGRES_DSN; installs
## (Debian) and starts the cluster only when needed, so it is idempotent.
testbed-postgres:
	@if [ ! -x $(PG_BIN)/postgres ]; then \
		echo "installing postgresql-$(PG_MAJOR)"; mkdir -p $(CACHE_DIR); \
		($(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq postgresql-$(PG_MAJOR)) >/dev/null || exit 1; \
		echo "trusting user postgres on $(PG_HOST) (test machine; see TESTBED.md)"; \
		sed -i '1i host all postgres $(PG_HOST)/32 trust' $(PG_HBA) || exit 1; \
		pg_ctlcluster --skip-systemctl-redirect $(PG_MAJOR) main reload 2>/dev/null || true; \
	fi
	@if ! $(PG_BIN)/pg_isready -q -h $(PG_HOST) -p $(PG_PORT); then \
		echo "starting PostgreSQL $(PG_MAJOR)"; \
		pg_ctlcluster --skip-systemctl-redirect $(PG_MAJOR) main start || exit 1; \
	fi
	@for i in $$(seq 1 60); do $(PG_BIN)/pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && break; sleep 0.5; done
	@$(PG_BIN)/psql "$(MESHCA_TEST_POSTGRES_DSN)" -Atqc 'SELECT 1' >/dev/null || { \
		echo "PostgreSQL does not accept $(MESHCA_TEST_POSTGRES_DSN) (trust auth expected; see TESTBED.md)"; exit 1; }
	@echo "PostgreSQL $(PG_MAJOR) ready at $(PG_HOST):$(PG_PORT)"

## bench-postgres: the store path (group commit vs. one transaction per record)
## and full issuance on PostgreSQL vs. SQLite (docs/benchmarks.md). Five rounds,
## each running every variant once, so that the machine's other load hits the
## variants alike (-count would run each variant five times in a row).
.PHONY: bench-postgres
bench-postgres: testbed-postgres
	for round in 1 2 3 4 5; do \
		$(GO) test -run '^$$' -bench 'BenchmarkRecordIssuance|BenchmarkIssuanceStore' -benchtime $(BENCHTIME) -count 1 ./store/postgres/ || exit 1; \
	done
