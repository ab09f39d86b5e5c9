# flusso: `make demo` (try it) and `make test` (check it) are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install services services-down services-status test test-kafka test-reseed lint layout bench bench-full bench-reseed bench-polling bench-kafka clean demo screenshot

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP) services
	@bash scripts/demo.sh

# docs/demo-partitions.png from a running `make demo` (installs Debian's chromium if missing)
screenshot:
	@bash scripts/screenshot.sh

# KAFKA=1 starts the Kafka broker too (queue: {type: kafka}); services-down stops it if it runs.
services:
	@KAFKA=$(KAFKA) bash services/up.sh

services-down:
	@bash services/down.sh

services-status:
	@bash services/postgres.sh status; bash services/opensearch.sh status; s=$$?; \
		bash services/kafka.sh status || echo "kafka: optional (make services KAFKA=1)"; exit $$s

lint: $(STAMP)
	$(BIN)/ruff check .

# the architecture's two rules (docs/architecture.md), and the five largest modules
layout: $(STAMP)
	$(BIN)/python scripts/check_layout.py

# Everything but the Kafka queue's end-to-end tests, which `make test-kafka` runs (CI runs both).
KAFKA_TESTS := tests/test_kafka_queue.py tests/test_kafka_roles.py tests/test_kafka_faults.py tests/test_kafka_ops.py \
	tests/test_dagster_kafka.py
# The zero-downtime reseed suite (writers on every table, a 50 ms poller, kills at every failpoint;
# ~5 minutes), which `make test-reseed` runs.
RESEED_TESTS := tests/test_reseed.py tests/test_dagster_reseed.py
test: $(STAMP) services lint layout
	$(BIN)/pytest -q --durations=15 $(addprefix --ignore=,$(KAFKA_TESTS) $(RESEED_TESTS))

# The Kafka queue's end-to-end tests (they start the broker themselves, ~6 minutes): kept apart so
# that `make test` stays under 20 minutes; `.ci/run` runs both.
test-kafka: $(STAMP) services
	$(BIN)/pytest -q --durations=10 $(KAFKA_TESTS)

# The reseed suite, kept apart for the same reason; `.ci/run` runs it too.
test-reseed: $(STAMP) services
	$(BIN)/pytest -q --durations=10 $(RESEED_TESTS)

# The quick scale (10k books, 20 s per rate at 50, 200, 500, 2000 and max changes/s, a backlog of 100k changes; ~15 minutes).
BENCH_ARGS ?= --books 10000 --seconds 20
bench: $(STAMP) services
	$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install -q --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The full table (100k books, 60 s per rate, a backlog of 1M changes; ~60 minutes).
# SCALES=10000,100000,1000000 adds the opt-in 1M-book scaling point (~15 minutes, ~3 GB more).
SCALES ?= 10000,100000
bench-full:
	$(MAKE) bench BENCH_ARGS="--books 100000 --scales $(SCALES) --seconds 60 --pgsync-timeout 300 \
		--backlog 1000000 --backlog-timeout 2400 --name run-100000"

# The reseed scenario (issue #12): a forced reseed of 100k books beside live capture and ~100 commits/s of
# writes, as searchers see it (the longest gap between successful searches, the lowest count); ~6 minutes.
RESEED_ARGS ?= --books 100000
bench-reseed: $(STAMP) services
	$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install -q --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python bench/run.py --scenario reseed $(RESEED_ARGS)

# capture: polling beside capture: wal (issue #14): a writer's commits/s with neither, with the triggers
# (flusso live, and stopped) and with the slot (flusso live); live p50/p99 of both at 50 and 200 changes/s; ~8 minutes.
POLLING_ARGS ?= --books 10000 --quiet-timeout 4
bench-polling: $(STAMP) services
	$(BIN)/python bench/run.py --scenario polling $(POLLING_ARGS)

# The Kafka queue beside the channel (issue #15): live p50/p99 and sustained changes/s with the channel and
# with Kafka at 1 and 2 workers, and the catch-up of a 100k-change backlog held in Kafka by 1 and 2 workers;
# ~15 minutes. Starts the broker (idempotent; FLUSSO_KAFKA_SH: another checkout's script, whose broker to share).
KAFKA_BENCH_ARGS ?= --books 10000 --kafka-backlog 100000
bench-kafka: $(STAMP) services
	bash $${FLUSSO_KAFKA_SH:-services/kafka.sh} up
	$(BIN)/python bench/run.py --scenario kafka $(KAFKA_BENCH_ARGS)

clean:
	rm -rf $(VENV) services/opensearch/target services/kafka/target
