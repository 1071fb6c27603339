# rtd / tldr / robattr monorepo. `make demo` (offline, embedded data) and `make test` are
# the two commands a new user needs; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYPROJECTS := shared/pyproject.toml rtd-cli/pyproject.toml tldr-cli/pyproject.toml robattr-cli/pyproject.toml

# Nothing in tests, demos or benches may download weights or data sets.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

# Pytest workers: 2 by default (CI has 2 cores); `make test JOBS=1` for serial runs.
JOBS ?= 2
DATA_ROOT ?= data

# The toy world's data seed (spurious split, modification triplets, galleries, digit subsets).
TOY_SEED ?= 0
export TOY_SEED

.PHONY: install test test-slow check-effects lint format demo demo-spread bench bench-stats bench-gpu clean help
help:
	@echo "make install   create .venv and install the four packages (editable) + dev tools"
	@echo "make test      offline CPU test suite (what CI runs)"
	@echo "make test-slow the tests marked slow (longer end-to-end runs)"
	@echo "make check-effects  each method's effect on the toy world, gated (TOY_SEED=N)"
	@echo "make lint      ruff check + format check"
	@echo "make demo      offline demo of every tool on embedded data"
	@echo "make bench     cost of each step (time, peak memory)"
	@echo "make demo-spread  how much each gated demo figure moves across torch thread counts"
	@echo "make bench-gpu one-shot check of every GPU hot path (< 8 min on one H100/H200)"
	@echo "make reproduce-<setting> DATA_ROOT=...   paper settings (see README)"

# Re-installs only when a pyproject or the dev requirements change (idempotent).
$(STAMP): $(PYPROJECTS) requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r requirements-dev.txt -e shared -e rtd-cli -e tldr-cli -e robattr-cli
	@touch $@

install: $(STAMP)

# Tests run on the CPU even on a GPU machine (CUDA hidden), as in CI.
test: install
	CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest -m "not slow and not effects" -n $(JOBS) -q

test-slow: install
	CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest -m "slow and not effects" -q

# The effect gates: each tool's demo pipeline on the toy world, failing when the paper's
# effect is gone (thresholds in tests/effects/). Serial: each gate uses both cores.
check-effects: install
	CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest -m effects tests/effects -q -s -rA

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Each tool adds its demo/bench/reproduce targets in its own makefile fragment.
DEMOS := demo-toy
BENCHES := bench-stats
-include robattr-cli/robattr.mk
-include tldr-cli/tldr.mk
-include rtd-cli/rtd.mk

# The shared part of the demo: fit (or load) the tiny CLIP and report its retrieval.
demo-toy: install
	$(BIN)/python -m labshared.tinyclip --report

demo: install $(DEMOS)

bench: install $(BENCHES)

# How much the gated demo figures move: each effect gate's pipeline once per torch thread
# count, each in a fresh process with its own cache (bench/demo_spread.py; each demo once
# per thread count). Writes runs/demo-spread/demo_spread.{md,json}.
SPREAD_THREADS ?= 1,2
demo-spread: install
	CUDA_VISIBLE_DEVICES= $(BIN)/python bench/demo_spread.py --threads $(SPREAD_THREADS) \
		--toy-seed $(TOY_SEED) --out runs/demo-spread
# Cost of the bootstrap intervals (labshared.stats) at CIRCO and CelebA test sizes.
bench-stats: install
	$(BIN)/python bench/stats_bench.py

# Every GPU hot path of the three tools in one short run (bench/gpu_check.py): random
# weights, synthetic data, under 8 minutes on one H100/H200; one table + runs/gpu_check.json.
# Its CPU check, `$(BIN)/python bench/gpu_check.py --smoke`, runs inside `make test`.
bench-gpu: install
	$(BIN)/python bench/gpu_check.py --out runs/gpu_check.json

clean:
	rm -rf runs .pytest_cache .ruff_cache
