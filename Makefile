# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv with the
# project and every extra installed; nothing needs to be running beforehand. `make test-fast`
# leaves out the tests marked slow (kills, signals, docs snippets, orchestrator runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROWS   ?= 1000000

.PHONY: demo test test-fast lint typecheck bench clean install stack stack-stop test-stack

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pgferry demo --rows $(ROWS)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks dags dagster_defs
	$(BIN)/mypy src
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks dags dagster_defs
	$(BIN)/ruff format --check src tests benchmarks dags dagster_defs

typecheck: $(STAMP)
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --rows $(ROWS)
	$(BIN)/python -m benchmarks.http_bench --rows $(ROWS)

# The whole stack on this machine, without Docker: three embedded PostgreSQL servers, Redis,
# Airflow 3 (CeleryExecutor, two workers) and Dagster (webserver + daemon). Prints the URLs.
stack: $(STAMP)
	$(BIN)/python scripts/stack.py start

stack-stop:
	$(BIN)/python scripts/stack.py stop

# End-to-end tests against that stack (they start and stop it themselves), in a real browser:
# Debian's chromium, installed here when missing (root, apt-get).
test-stack: $(STAMP)
	scripts/stack_apt.sh
	PGFERRY_STACK_TESTS=1 $(BIN)/python -m pytest tests/stack -v --timeout 900

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .stack tests/stack/artifacts
