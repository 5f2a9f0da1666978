# The two quick-start commands: `make up` (start the mesh with sample data) and `make test`.
# Each creates the virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench bench-writes clean

up: $(STAMP)
	$(BIN)/datamesh up $(ARGS)

test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

bench: $(STAMP)
	$(BIN)/python bench/stream_memory.py

bench-writes: $(STAMP)
	$(BIN)/python bench/write_load.py $(ARGS)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .datamesh .mypy_cache .pytest_cache .ruff_cache .hypothesis
