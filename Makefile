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
	$(BIN)/ruff check profiled tests twisted bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check profiled tests twisted bench
	$(BIN)/ruff format --check profiled tests twisted bench

clean:
	rm -rf $(VENV) build dist *.egg-info var test-output .pytest_cache .ruff_cache
