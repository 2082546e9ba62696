# caja — the two set-up commands of the README:
#   make demo   runs the product (demo on embedded SQLite with sample data)
#   make test   runs the whole test suite (installs what a fresh machine lacks)
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTEST_ARGS ?=

.PHONY: demo test bench install

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

install: $(UV)
	$(UV) sync --locked --quiet

demo: install
	.venv/bin/caja demo

test: install
	bash scripts/test-prerequisites.sh
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: install
	.venv/bin/python -m bench
