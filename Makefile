# poolwise: two commands do all the set-up.
#   make demo   creates .venv (Python >= 3.12, the locked dependencies) and fits the bundled survey data
#   make test   creates .venv-test (the same, plus the test tools) and runs the default test tier
# The versions installed come from requirements.lock / requirements-test.lock (`make lock`
# regenerates them from the ranges in pyproject.toml).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TVENV := .venv-test
TPY := $(TVENV)/bin/python
# tests run in two processes, one test file each (module fixtures are built once); CI has 2 cores.
# `make test XDIST=` runs them in one process.
XDIST ?= -n 2 --dist loadfile

# The first Python >= 3.12 that runs: on PATH, else any that pyenv manages (a pyenv shim can
# exist for a version that is not selected, so each candidate is tried, not just looked up).
PYTHON312 ?= $(shell for p in python3.12 python3.13 python3.14 \
	$$(command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/3.1[2-9]*/bin/python3 2>/dev/null); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { echo $$p; break; }; done)

.PHONY: demo test test-slow test-browser test-all lint lock bench clean clean-cache browser

# Headless Chromium for the report's browser test (tests/test_report.py, marker `browser`).
CHROMIUM ?= /usr/bin/chromium

define make_venv
	@test -n "$(PYTHON312)" || { echo "error: no Python >= 3.12 found; install python3.12 and retry" >&2; exit 1; }
	rm -rf $(1)
	$(PYTHON312) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q -r $(2)
	$(1)/bin/python -m pip install -q --no-deps -e .
	touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml requirements.lock
	$(call make_venv,$(VENV),requirements.lock)

$(TVENV)/.installed: pyproject.toml requirements-test.lock
	$(call make_venv,$(TVENV),requirements-test.lock)

demo: $(VENV)/.installed
	$(VENV)/bin/poolwise fit --example bangladesh --out out/demo

# Installs Debian's chromium when it is missing and we are root with apt-get. Without it the
# browser tests skip locally and fail when CI is set (tests/test_report.py).
browser:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "note: $(CHROMIUM) is missing and could not be installed (apt-get install chromium)"

# The default tier: what developers run all the time (includes the browser test).
test: $(TVENV)/.installed browser
	$(TPY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

# The slow statistical tier: calibration of varying slopes, repair against the quadrature
# reference, crossed recovery, the long crash-consistency run.
test-slow: $(TVENV)/.installed
	$(TPY) -m pytest -m slow $(XDIST) $(PYTEST_ARGS)

test-all: $(TVENV)/.installed browser
	$(TPY) -m pytest $(XDIST) $(PYTEST_ARGS)

lint: $(TVENV)/.installed
	$(TVENV)/bin/ruff check src tests bench

# Regenerate the lock files from pyproject's ranges (needs the package index).
lock: $(TVENV)/.installed
	$(TPY) -m pip install -q uv
	$(TVENV)/bin/uv pip compile pyproject.toml --python-version 3.12 --no-annotate --no-header -q -o requirements.lock
	$(TVENV)/bin/uv pip compile pyproject.toml --python-version 3.12 --no-annotate --no-header -q --extra test -o requirements-test.lock

bench: $(TVENV)/.installed
	@test -x bench/.venv-peers/bin/python || { $(PYTHON312) -m venv bench/.venv-peers && bench/.venv-peers/bin/pip install -q -r bench/requirements-peers.txt; }
	$(TPY) bench/run.py $(BENCH_ARGS)

# numba caches a compiled function beside its source and checks only that file's date, so a kernel
# inlined from another module (density.log_p_q into likelihood._patterns) can go stale while you
# edit it: `make clean-cache` after changing a kernel
clean-cache:
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-cache
	rm -rf $(VENV) $(TVENV) out .pytest_cache
