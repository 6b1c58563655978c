# Set-up and every entry point: `make demo`, `make test`, `make bench`.
# Each target creates .venv, installs skymix with its dependencies (building the native core)
# and the Debian packages it needs when they are missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.skymix-installed
# libjs-*: janus.js and adapter.js, served to browsers by `skymix serve`; chromium: the
# browser the live-room tests drive (through Playwright, never `playwright install`)
# fonts: name labels in every script (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, CJK, emoji)
DEBIAN_PACKAGES := ffmpeg tcpdump faketime janus janus-tools iproute2 postgresql \
	libjs-janus-gateway libjs-webrtc-adapter chromium \
	fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench system-deps setup clean

demo: setup
	$(VENV)/bin/skymix demo --output skymix-demo.mp4

test: setup
	$(VENV)/bin/ruff check src tests benchmarks setup.py
	$(VENV)/bin/ruff format --check src tests benchmarks setup.py
	$(PY) -m mypy
	$(PY) -m pytest -q

# byte-compiled first, as an installed package is (pip compiles what it installs): an editable
# install under PYTHONDONTWRITEBYTECODE would compile every module at each start of `skymix`
bench: setup
	$(PY) -m compileall -q src/skymix
	$(PY) -m pytest benchmarks -q -o python_files='bench_*.py' --benchmark-enable \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name \
		--benchmark-json=.benchmarks/latest.json $(BENCH_ARGS)

setup: system-deps $(STAMP)

system-deps:
	@missing=""; \
	for pkg in $(DEBIAN_PACKAGES); do \
		dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml setup.py $(wildcard src/_native/*.pyx src/_native/*.pxd)
	$(PY) -m pip install -q "setuptools==80.9.0" "Cython==3.3.1"
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	@mkdir -p .benchmarks
	touch $@

clean:
	rm -rf $(VENV) build src/skymix/_native/*.so src/_native/*.c .benchmarks .pytest_cache
