# edge-service: `make run` serves the default family, `make test` runs every quality gate.
# Both work on a fresh Debian/Ubuntu machine: they create .venv, install what is missing
# (as root, or through sudo, Debian's dataset-fashion-mnist), and are safe to re-run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := /usr/share/datasets/fashion-mnist
# torch is pinned: an unpinned torch pulls several GB of CUDA packages. 2.13.0 is the CPU
# wheel on disk here (PIP_FIND_LINKS); on other machines pip fetches the same version.
TORCH  := torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test data browser engines lint typecheck unit integration clean help

help:
	@echo "make run   - install, serve on 127.0.0.1:8080 (building what is missing in the background)"
	@echo "make test  - install, then ruff, mypy and pytest (unit + integration)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per install set, redone when pyproject.toml changes.
$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[train]'
	@touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.run-installed
	$(BIN)/pip install -q -e '.[train,dev]'
	@touch $@

data:
	@if [ ! -e $(DATA)/t10k-images-idx3-ubyte.gz ] && [ ! -e $(DATA)/t10k-images-idx3-ubyte ]; then \
	  echo "installing Debian's dataset-fashion-mnist into $(DATA)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; \
	fi

# The dashboard test drives Debian's Chromium headless (never a downloaded browser); the
# deploy tests lint the container scripts with shellcheck.
browser:
	@if [ ! -x /usr/bin/chromium ] || ! command -v shellcheck >/dev/null; then \
	  echo "installing Debian's chromium and shellcheck for the dashboard and deploy tests"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q --no-install-recommends chromium shellcheck; \
	fi

# Idempotent: a second run builds nothing and says so.
engines: $(VENV)/.run-installed data
	$(BIN)/edge-service build

# Serves at once on the first engine (base FP32, built in about a minute if missing);
# the device's front, the other engines and the power-mode profiles are built in the
# background and join as they land. A second run serves the built family in seconds.
run: $(VENV)/.run-installed data
	$(BIN)/edge-service serve --build

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check edge_service tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy edge_service

unit: $(VENV)/.dev-installed data
	$(BIN)/pytest -q tests/unit

integration: $(VENV)/.dev-installed data browser
	$(BIN)/pytest -q tests/integration

test: $(VENV)/.dev-installed data browser
	$(BIN)/ruff check edge_service tests bench
	$(BIN)/mypy edge_service
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
