# Set-up from nothing, idempotent: `make demo` and `make test` are all a new machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gan-audit-installed
TORCH_VERSION := 2.13.0
LOG := $(VENV)/install.log

.PHONY: setup demo test lint docs bench clean

setup: $(STAMP)

# CPU torch goes in first: an unpinned torch would pull a multi-GB CUDA build.
# A local wheel (pip's find-links) is used when the machine has one; otherwise
# PyTorch's CPU index. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (log: $(LOG))" >&2
	@set -o pipefail; : > $(LOG); \
	if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" >>$(LOG) 2>&1 \
	  || $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" \
	       --index-url https://download.pytorch.org/whl/cpu >>$(LOG) 2>&1 \
	  || { tail -20 $(LOG); exit 1; }; \
	fi; \
	$(BIN)/python -m pip install -q -e '.[test]' >>$(LOG) 2>&1 || { tail -20 $(LOG); exit 1; }
	@touch $(STAMP)

demo: setup
	$(BIN)/gan-audit demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check audit tests benchmarks

# The API reference, from the docstrings of the public modules, into docs/_build
# (tests/test_api_reference.py builds the same and fails on any warning).
API_MODULES := audit audit.api audit.api.front audit.api.results audit.vocabulary audit.errors
PDOC_OPTIONS := --docformat numpy
docs: setup
	rm -rf docs/_build
	$(BIN)/python -m pdoc $(PDOC_OPTIONS) --output-directory docs/_build $(API_MODULES)
	@echo "API reference: docs/_build/index.html" >&2

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) dist build .pytest_cache .ruff_cache
