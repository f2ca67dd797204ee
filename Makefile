# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv with the
# project and every extra installed; nothing needs to be running beforehand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROWS   ?= 1000000

.PHONY: demo test lint typecheck bench clean install

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

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks dags dagster_defs
	$(BIN)/ruff format --check src tests benchmarks dags dagster_defs

typecheck: $(STAMP)
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --rows $(ROWS)
	$(BIN)/python -m benchmarks.http_bench --rows $(ROWS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
