# Two commands for a newcomer: `make run` (the feed against the simulator, with the API
# and status page) and `make test` (the whole suite). Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The Rust hot path (native/) is built by cargo: rustup installs it in ~/.cargo/bin.
export PATH := $(HOME)/.cargo/bin:$(PATH)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/alphapanda/cargo-target
NATIVE_SOURCES := Cargo.toml $(wildcard Cargo.lock native/src/*.rs)

.PHONY: venv run test test-unit lint typecheck services-up services-down services-status bench clean

$(STAMP): pyproject.toml constraints.txt $(NATIVE_SOURCES)
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) to build the native hot path"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

services-up:
	scripts/devstack.sh up

services-down:
	scripts/devstack.sh down

services-status:
	scripts/devstack.sh status

run: venv services-up
	scripts/run.sh

# Starts the services it needs and stops them again unless KEEP_SERVICES=1 (or they
# were already running before).
test: venv
	scripts/test.sh $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: venv
	$(BIN)/mypy

clean: services-down
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache
