# flusso: `make demo` (try it) and `make test` (check it) are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install services services-down services-status test lint bench clean demo screenshot

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

services:
	@bash services/up.sh

services-down:
	@bash services/down.sh

services-status:
	@bash services/postgres.sh status; bash services/opensearch.sh status

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) services lint
	$(BIN)/pytest -q

bench: $(STAMP) services
	$(BIN)/python bench/build.py

clean:
	rm -rf $(VENV) services/opensearch/target
