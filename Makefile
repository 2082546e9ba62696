# caja — the two set-up commands of the README:
#   make demo   runs the product (demo on embedded SQLite with sample data)
#   make test   runs the lint and type checks, then the whole test suite (installs what a fresh machine lacks)
#   make lint   runs the lint and type checks alone
# and, for a server:
#   make install   the four packages as an operator runs them (no test or lint tools, not editable)
#   make wheels    a release in dist/: the four wheels, requirements.txt, deploy/ (docs/operations.md, 2.2)
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTEST_ARGS ?=

.PHONY: demo test lint bench install dev wheels

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

install: $(UV)
	$(UV) sync --locked --quiet --no-dev --all-packages --no-editable

# --inexact: a plugin installed beside caja (uv pip install -e ../caja-NAME) stays installed.
dev: $(UV)
	$(UV) sync --locked --quiet --inexact

wheels: $(UV)
	rm -rf dist
	$(UV) build --all-packages --wheel -o dist
	$(UV) export --locked --quiet --no-dev --all-packages --no-emit-workspace --no-hashes -o dist/requirements.txt
	cp -r deploy CHANGELOG.md dist/

demo: dev
	.venv/bin/caja demo

# Fail fast, before the long test run, with one line that says what to run.
lint: dev
	@.venv/bin/ruff format --check . || { echo "make lint: files not formatted; run: .venv/bin/ruff format ." >&2; exit 1; }
	@.venv/bin/ruff check . || { echo "make lint: ruff found problems (listed above); .venv/bin/ruff check --fix . fixes the simple ones" >&2; exit 1; }
	@.venv/bin/mypy || { echo "make lint: type errors (listed above); fix them, then run: .venv/bin/mypy" >&2; exit 1; }

test: dev lint
	bash scripts/test-prerequisites.sh
	UV="$(abspath $(UV))" .venv/bin/python -m pytest $(PYTEST_ARGS)

bench: dev
	.venv/bin/python -m bench
