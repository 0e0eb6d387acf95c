# profiled: the two commands a newcomer needs, and a few more.
#   make run    all roles, local driver, on http://127.0.0.1:8080/
#   make test   the whole test suite (starts the moto and S3 servers it needs)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LISTEN ?= tcp:8080:interface=127.0.0.1
DATA_DIR ?= ./var
PYTEST_ARGS ?=
LINT_DIRS := $(wildcard profiled tests twisted bench)

.PHONY: run test lint bench deb clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (apt-get install python3 python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: apt-get install python3-venv"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall when the packaging or the code changes; a non-editable install,
# exactly as an operator's `pip install .` gives.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml $(shell find profiled twisted -name '*.py' -o -name '*.html' 2>/dev/null)
	$(BIN)/pip install --quiet '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@mkdir -p $(DATA_DIR)
	PROFILED_COMMIT=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
	PROFILED_LOG_FORMAT=$${PROFILED_LOG_FORMAT:-text} \
	$(BIN)/twistd --nodaemon --pidfile= profiled --role=all --listen=$(LISTEN) --data-dir=$(DATA_DIR)

test: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/mypy profiled
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/mypy profiled

# Benchmarks (docs/benchmarks.md): bench/install.sh adds what they need when
# missing (wrk and nginx with apt-get, pyvips-binary into .venv, thumbor 7 into
# its own venv under bench/.work), then every benchmark runs and the tables of
# docs/benchmarks.md are rewritten. One: $(BIN)/python -m bench.crunch (or
# ingest, serve, e2e, e2e_aws). Results: bench/results/*.json (not committed).
bench: $(STAMP)
	VENV=$(VENV) sh bench/install.sh
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info var test-output .pytest_cache .ruff_cache

# The Debian package (docs/packaging.md). `make deb` installs the build
# dependencies with apt-get when some are missing, builds from a copy of the
# tree in build/deb (tracked and new files, not ignored ones) and leaves
# dist/profiled_<version>_<arch>.deb. `make test-deb` (root) builds it if
# needed, installs it, runs it as an operator would, and purges it.
DEB_VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog 2>/dev/null)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
DEB := dist/profiled_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_BUILD := build/deb
DEB_SOURCES := $(shell git ls-files -co --exclude-standard 2>/dev/null | grep -v '^tests/\|^bench/')
DEB_COMMIT = $$(git rev-parse HEAD)$$(git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: test-deb

deb: $(DEB)

$(DEB): $(wildcard $(DEB_SOURCES))
	@git rev-parse --git-dir >/dev/null || { echo "make deb builds from a git checkout"; exit 1; }
	@dpkg-checkbuilddeps 2>/dev/null || { \
	    echo "installing the build dependencies (apt-get build-dep)"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq --no-install-recommends ./; }
	rm -rf $(DEB_BUILD) && mkdir -p $(DEB_BUILD)/profiled
	git ls-files -z -co --exclude-standard \
	    | xargs -0 sh -c 'for f; do [ -f "$$f" ] && printf "%s\0" "$$f"; done' sh \
	    | tar --null -T - -cf - | tar -xf - -C $(DEB_BUILD)/profiled
	cd $(DEB_BUILD)/profiled && PROFILED_COMMIT=$(DEB_COMMIT) dpkg-buildpackage -us -uc -b
	@mkdir -p dist
	cp $(DEB_BUILD)/$(notdir $(DEB)) $@
	@ls -l $@

test-deb: $(STAMP)
	PROFILED_TEST_DEB=1 $(BIN)/python -m pytest -m deb tests/deb $(PYTEST_ARGS)
