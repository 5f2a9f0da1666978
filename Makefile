# The two quick-start commands: `make up` (start the mesh with sample data) and `make test`.
# Each creates the virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint notebooks bench bench-writes clean

up: $(STAMP)
	$(BIN)/datamesh up $(ARGS)

test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# JupyterLab on notebooks/ against the running mesh (`make up` in another terminal): a token of
# 8 hours that reads every domain and the mesh, PII masked, minted with the local secret
# (DATAMESH_DATA_DIR if `make up` was given another --data-dir); DATAMESH_URL defaults to the
# local mesh. ARGS go to Jupyter (e.g. ARGS="--no-browser --port 8890").
JUPYTER ?= $(BIN)/jupyter
notebooks: $(STAMP)
	@token=$$($(BIN)/datamesh token --persona analyst --sub notebooks) && \
	DATAMESH_URL=$${DATAMESH_URL:-http://127.0.0.1:8000} DATAMESH_TOKEN=$$token \
	JUPYTER_PLATFORM_DIRS=1 $(JUPYTER) lab notebooks/ $(ARGS)

# the benchmark suite (docs/performance.md): builds the bench data once under .datamesh/bench,
# writes bench/results.md; ARGS="--quick" for a short run, ARGS="--only reads" for one section
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench $(ARGS)

bench-writes: $(STAMP)
	$(BIN)/python bench/write_load.py $(ARGS)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev,notebooks]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .datamesh .mypy_cache .pytest_cache .ruff_cache .hypothesis
