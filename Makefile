# The two commands: `make demo` (the main job on built-in data) and `make test` (the fast suite,
# = CI: lint, types, pytest without the `slow` tests). `make test-all` adds the slow tests
# (subprocesses, SIGKILL, DDP, large N).
# Both create .venv on first use: torch==2.13.0 first (the local CPU build on the dev machines,
# PyPI's elsewhere), then scoresde itself, editable, with its dev tools.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint typecheck pytest pytest-all bench clean

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

pytest-all: $(STAMP)
	$(BIN)/python -m pytest -q -m 'slow or not slow'

test: lint typecheck pytest

test-all: lint typecheck pytest-all

BENCHMARKS := parameterize samplers_quality samplers_overhead likelihood_analytic \
	likelihood_overhead likelihood_trained likelihood_floor training inverse inverse_exact crash \
	memory train_grid flow_training interop_digits scale_out samplers_general fit_schedule \
	likelihood_grid \
	consistency

bench: $(STAMP)
	# peers for the comparisons; k-diffusion without its dependencies (they would replace torch)
	$(BIN)/python -m pip install --quiet scipy torchsde diffusers
	$(BIN)/python -m pip install --quiet --no-deps k-diffusion torchcfm pot flow_matching
	# one script per measurement (modules starting with _ or ending in _common/_peers/_report/
	# _reference/_variants are shared helpers); gpu.py only where CUDA is present
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py || exit 1; done
	if $(BIN)/python -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then \
		$(BIN)/python benchmarks/gpu.py --part all; fi

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
