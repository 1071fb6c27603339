"""bench/fingerprint_bench.py at a small size (its code cannot rot): the CelebA layout it
writes loads, and the three ways of fingerprinting it agree."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def fb(monkeypatch):
    """The fingerprint_bench module, imported as `python bench/fingerprint_bench.py` sees it."""
    monkeypatch.syspath_prepend(str(BENCH))
    import fingerprint_bench

    return fingerprint_bench


def test_the_bench_layout_is_celeba_and_walk_equals_listed(fb, tmp_path):
    from labshared.cache import fingerprint_files
    from labshared.data.group_shift import load_celeba

    names = fb.write_celeba_layout(tmp_path, 100)
    sizes = {s: len(load_celeba(tmp_path, s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 80, "val": 10, "test": 10}  # CelebA's 162,770 / 19,867 / 19,962
    annotations = ["list_attr_celeba.csv", "list_eval_partition.csv"]
    assert fingerprint_files(tmp_path) == fingerprint_files(tmp_path, [*names, *annotations])


def test_main_prints_one_json_line(fb, monkeypatch, capsys):
    import json
    import sys

    monkeypatch.setattr(sys, "argv", ["fingerprint_bench.py", "--n", "50", "--repeats", "1"])
    fb.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["files"] == 50 and result["listed_s"] >= 0 and result["walk_s"] >= 0
