# linreg-flow: `make run` and `make test` set everything up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
PORT ?= 4200
# pytest-xdist workers for `make test`: a module's tests stay together on one worker (--dist loadfile);
# two overlap one module's server starts and sleeps with another's work on a 2-core machine.
TEST_WORKERS ?= 2

# Prefect and matplotlib keep their state inside the project, never in $HOME.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MPLCONFIGDIR ?= $(CURDIR)/.mplconfig
export MPLBACKEND := Agg

.PHONY: install install-dev run test server bench clean

# The stamp files make `make install` a no-op while pyproject.toml and constraints.txt are unchanged.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The compiled kernels are compiled here, once (numba's on-disk cache), never inside a run.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e .
	$(BIN)/python -m tasks.kernels.compiled
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	@$(BIN)/linreg run data/seed.csv

# Then the numerically sensitive tests (pytest -m numeric) again under torch's other CPU kernels
# (tests/capabilities.py), so that a result that holds on one kernel path only fails here too.
test: install-dev
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
	@for cap in $$($(BIN)/python -m tests.capabilities); do \
		echo "== the numeric tests again with ATEN_CPU_CAPABILITY=$$cap"; \
		ATEN_CPU_CAPABILITY=$$cap $(BIN)/python -m pytest -q -m numeric || exit 1; \
	done

# The UI must be told the API's port when it is not Prefect's default 4200.
server: install
	@echo "Prefect UI: http://127.0.0.1:$(PORT)   API: http://127.0.0.1:$(PORT)/api   (Ctrl-C stops it)"
	@echo "In another terminal: export PREFECT_API_URL=http://127.0.0.1:$(PORT)/api"
	PREFECT_SERVER_UI_API_URL=http://127.0.0.1:$(PORT)/api exec $(BIN)/prefect server start --host 127.0.0.1 --port $(PORT)

bench: install-dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .prefect .mplconfig .pytest_cache
