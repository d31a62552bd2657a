# `make demo`: set up .venv and run the embedded demo study. `make test`: set up and run the tests.
# TORCH picks the PyTorch build: torch==2.13.0 from PyPI is a CUDA build on Linux x86_64 (and the
# local CPU build on this project's sandboxes). CPU-only elsewhere:
#   make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN = $(VENV)/bin
# Bytecode caches on: with PYTHONDONTWRITEBYTECODE set (as on this project's sandboxes) every
# process -- each test worker, subprocess and Ray worker -- compiles pandas, Ray and MONAI again
# (14-17 s of imports instead of 6-7).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-default test-slow lint typecheck bench clean

# pip installs torch (it honours TORCH_INDEX and the machine's pip configuration; --no-compile:
# the modules a process imports are compiled then, not all 2,300 now, 12 s); uv installs the
# rest in seconds (parallel downloads; pip took two minutes) and keeps the torch it finds.
$(BIN)/study: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH)" $(TORCH_INDEX)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test]'
	touch $@

setup: $(BIN)/study

demo: setup
	$(BIN)/study demo

lint: setup
	$(BIN)/ruff check .

# mypy over study, analysis and ops (pyproject's [tool.mypy]); a cold run takes a minute or
# two, later ones reuse .mypy_cache.
typecheck: setup
	$(BIN)/mypy

# `make test`: ruff, then mypy beside the default lane (every test but the slow, GPU and cluster
# ones: pyproject's addopts) on one xdist worker per core (at most 4; the tests that start Ray
# share one worker, tests/conftest.py). mypy's minute of one core overlaps the tests.
test: lint
	$(MAKE) --no-print-directory -j2 typecheck test-default

test-default: setup
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadgroup

# The slow lane (CI runs it after `make test`): the full demo, driver SIGKILLs, Ctrl-C,
# optimize mode, S3 launch/kill/resume, the GPU check's CPU variant, the phenomenon on
# four datasets.
test-slow: setup
	$(BIN)/pytest -q -m slow

bench: setup
	$(BIN)/python bench/bench_metrics.py

clean:
	rm -rf $(VENV) study-results .pytest_cache .ruff_cache .mypy_cache
