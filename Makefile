# Two entry points for a new user: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench lock clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/markd demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy oracle feeds disputes
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check oracle feeds disputes bench tests

bench: $(STAMP)
	$(BIN)/python bench/aggregate.py
	$(BIN)/python bench/replay.py

# requirements.lock: every runtime dependency pinned with its hashes, and the `fast` extra (uvloop);
# the Dockerfile installs exactly these. Run after changing [project] dependencies (tests/deploy checks the lock matches them);
# `make lock LOCK_ARGS=--upgrade` moves every pin to the newest allowed release.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --extra fast --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url \
		--no-emit-find-links $(LOCK_ARGS) --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache .mypy_cache
