# The two commands: `make demo` (the main job on built-in data) and `make test` (the whole suite).
# Both create .venv on first use: torch==2.13.0 first (the local CPU build on the dev machines,
# PyPI's elsewhere), then scoresde itself, editable, with its dev tools.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scoresde demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src/scoresde

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	# peers for the comparisons; k-diffusion without its dependencies (they would replace torch)
	$(BIN)/python -m pip install --quiet scipy torchsde diffusers
	$(BIN)/python -m pip install --quiet --no-deps k-diffusion
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
