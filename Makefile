# Quick start: `make demo` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
# torch is installed first from a pinned spec: an unpinned torch pulls a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,dask,adapters,patches
BIN := $(VENV)/bin
STAMP := $(VENV)/.varloss-installed

.PHONY: demo test test-fast lint bench gpu-check clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m varloss.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The quick loop while working: everything but the tests marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# ruff, then the layer and no-cycle contracts in pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_spectrum.py
	$(BIN)/python benchmarks/bench_threads.py
	$(BIN)/python benchmarks/bench_fid.py
	$(BIN)/python benchmarks/bench_correct.py

# benchmarks/gpu_check.py: at most 8 minutes on one GPU, one table (says so and exits 0 without
# CUDA). Needs a CUDA build of torch: make gpu-check TORCH_SPEC="torch==2.13.0 --index-url ...".
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
