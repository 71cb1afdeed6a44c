# The README's commands. Every target sets up its own virtualenv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make demo` installs only the demo's extra, not the test/lint/bench tools.
DEMO_STAMP := $(VENV)/.installed-demo
SOURCES := setup.cfg setup.py pyproject.toml greenws/_speedups.c

.PHONY: install test demo bench lint clean browser proxy redis

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(SOURCES) | $(PY)
	$(PY) -m pip install -q -e '.[test,lint,bench]'
	touch $(STAMP)

$(DEMO_STAMP): $(SOURCES) | $(PY)
	$(PY) -m pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

install: $(STAMP)

# Headless Chromium for tests/test_browser.py (Debian's package). The test
# also installs it when missing, and skips with the reason if it cannot.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { $$SUDO apt-get update -q && \
	    $$SUDO apt-get install -y -q --no-install-recommends chromium; } \
	  || echo "warning: could not install chromium: tests/test_browser.py will skip"; }

# Debian's tinyproxy for tests/test_proxy.py (a real HTTP proxy); the tests
# skip with the reason if it is missing.
proxy:
	@command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { $$SUDO apt-get update -q && \
	    $$SUDO apt-get install -y -q --no-install-recommends tinyproxy; } \
	  || echo "warning: could not install tinyproxy: tests/test_proxy.py will skip"; }

# redis-server for tests/test_rooms.py (Debian's package); the tests skip
# with the reason if it cannot be installed.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { $$SUDO apt-get update -q && \
	    $$SUDO apt-get install -y -q --no-install-recommends redis-server; } \
	  || echo "warning: could not install redis-server: the Redis tests of tests/test_rooms.py will skip"; }

test: $(STAMP) browser proxy redis
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Serves examples/chat on http://127.0.0.1:8000/ and prints that URL.
demo: $(DEMO_STAMP)
	$(PY) examples/chat/run.py

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check greenws tests examples bench
	$(VENV)/bin/mypy greenws

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
