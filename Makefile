# Set-up from nothing, idempotent: `make demo` and `make test` are all a new machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gan-audit-installed
DEMO_STAMP := $(VENV)/.gan-audit-base
TORCH_VERSION := 2.13.0
LOG := $(VENV)/install.log

.PHONY: setup demo test lint docs bench clean

# Set-up does not byte-compile (about 25 s for torch and the rest on 2 cores): Python writes
# the .pyc of what each process imports on first use, unless PYTHONDONTWRITEBYTECODE is set
# (as on this project's machines), so it is not passed to the commands below.
unexport PYTHONDONTWRITEBYTECODE

setup: $(STAMP)

# tools/setup-venv.sh: CPU torch first (an unpinned torch would pull a multi-GB CUDA
# build), then the project; with uv where it can be had, pip as the fallback. `make demo`
# installs what the audit needs; `make test` adds the test extra. Each re-runs only when
# pyproject.toml changes.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) with the test extra (log: $(LOG))" >&2
	@mkdir -p $(VENV) && : > $(LOG)
	@PYTHON=$(PYTHON) TORCH_VERSION=$(TORCH_VERSION) tools/setup-venv.sh $(VENV) test $(LOG)
	@touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	@echo "setting up $(VENV) (log: $(LOG))" >&2
	@mkdir -p $(VENV) && : > $(LOG)
	@PYTHON=$(PYTHON) TORCH_VERSION=$(TORCH_VERSION) tools/setup-venv.sh $(VENV) "" $(LOG)
	@touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/gan-audit demo

test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile

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
	for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) dist build .pytest_cache .ruff_cache
