"""Effect gates: each tool's demo pipeline on the toy world, with the thresholds of issue 9.

Run with `make check-effects` (or `pytest -m effects tests/effects`); `make test` skips
them. The toy world's data seed comes from the `TOY_SEED` environment variable (the
Makefile exports `TOY_SEED ?= 0`), so `make check-effects TOY_SEED=1` re-draws the
spurious split, the modification triplets and galleries, and the digit subsets.
Each gate writes its run folders under `runs/effects/seed-<N>/<tool>` and prints its
figures, so a failing gate shows what it measured.
"""

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def full_tiny_clip(monkeypatch):
    """Gates measure the method with the tiny CLIP users get (`make demo`): the full fit,
    not the quick profile the rest of the suite uses (tests/conftest.py)."""
    monkeypatch.setenv("LABSHARED_TINY_CLIP_FIT", "full")


@pytest.fixture(scope="session")
def toy_seed() -> int:
    return int(os.environ.get("TOY_SEED", "0"))


@pytest.fixture(scope="session")
def effects_dir(toy_seed) -> Path:
    root = Path(os.environ.get("EFFECTS_DIR", "runs/effects")) / f"seed-{toy_seed}"
    root.mkdir(parents=True, exist_ok=True)
    return root
