# Quick start: `make run` (set up, then serve on embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE_DIR := tests/interop/node

.PHONY: run test lint bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --silent --no-audit --no-fund
	touch $@

# Chromium (browser tests) and SoftHSM come from Debian; installed when missing and root.
system-deps:
	@scripts/system-deps.sh

# the clone's own data dir, whatever bastion-data a parent directory may hold; a second
# `make run` while one runs stops at the busy port before touching it
run: $(VENV)/.installed
	$(BIN)/bastion serve --dev --demo --data-dir bastion-data

test: $(VENV)/.installed-test $(NODE_DIR)/node_modules/.installed system-deps
	$(BIN)/ruff check src
	$(BIN)/mypy -p bastion
	$(BIN)/pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/mypy -p bastion

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules bastion-data
