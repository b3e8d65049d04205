# poolwise: two commands do all the set-up.
#   make demo   creates .venv (Python >= 3.12, pinned dependencies) and fits the bundled survey data
#   make test   creates .venv with the test extras and runs the default test suite
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The first Python >= 3.12 that actually runs (pyenv shims can exist without a usable version).
PYTHON312 ?= $(shell for p in python3.12 python3.13 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { echo $$p; break; }; done)

.PHONY: demo test test-slow test-all lint bench clean browser

# Headless Chromium for the report's browser test (tests/test_report.py, marker `browser`).
# Installed with apt-get (Debian's chromium package) when it is missing and we can; otherwise
# the browser test skips and says why.
CHROMIUM ?= /usr/bin/chromium

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || { echo "error: no Python >= 3.12 found; install python3.12 and retry" >&2; exit 1; }
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/poolwise fit --example bangladesh --out out/demo

browser:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "note: $(CHROMIUM) is missing and could not be installed (apt-get install chromium); the browser test will be skipped"

test: $(VENV)/.installed browser
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(VENV)/.installed browser
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	@test -x bench/.venv-peers/bin/python || { $(PYTHON312) -m venv bench/.venv-peers && bench/.venv-peers/bin/pip install -q -r bench/requirements-peers.txt; }
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
