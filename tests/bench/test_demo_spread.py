"""bench/demo_spread.py's bookkeeping: spreads and gate margins from per-run figures, the
Markdown verdicts, and the per-run cache that links (never deletes) the machine cache."""

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "bench" / "demo_spread.py"
spec = importlib.util.spec_from_file_location("demo_spread", PATH)
demo_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_spread)


def _records():
    tldr = [(1, 0.040, 0.795, 0.912), (2, 0.025, 0.815, 0.916)]
    records = [
        {"tool": "tldr", "threads": t, "figures": {"ERM worst-group": erm,
         "TLDR average": avg, "TLDR - ERM worst-group": tl - erm}}
        for t, erm, tl, avg in tldr
    ]  # fmt: skip
    records += [
        {"tool": "rtd", "threads": t, "figures": {"gain R@1": gain, "unseen gain R@1": 10.5}}
        for t, gain in ((1, 44.7), (2, 44.7))
    ]
    return records


def test_spread_and_margins_per_figure():
    rows = {(r["tool"], r["figure"]): r for r in demo_spread.summarise(_records(), [1, 2])}
    gain = rows[("tldr", "TLDR - ERM worst-group")]
    assert gain["values"] == {1: pytest.approx(0.755), 2: pytest.approx(0.790)}
    assert gain["spread"] == pytest.approx(0.035)
    assert gain["threshold"] == 0.25 and gain["worst_margin"] == pytest.approx(0.505)
    assert gain["margin_exceeds_spread"] is True
    assert "threshold" not in rows[("tldr", "ERM worst-group")]  # not gated
    rtd = rows[("rtd", "gain R@1")]
    assert rtd["spread"] == 0 and rtd["worst_margin"] == pytest.approx(34.7)
    unseen = rows[("rtd", "unseen gain R@1")]
    assert unseen["worst_margin"] == pytest.approx(0.5) and unseen["margin_exceeds_spread"]


def test_markdown_names_a_gate_whose_margin_is_not_larger_than_the_spread():
    records = _records()
    records[3]["figures"]["unseen gain R@1"] = 9.0  # spread 1.5 > margin -1.0
    rows = demo_spread.summarise(records, [1, 2])
    meta = {"toy_seed": 0, "wall_s": 1.0, "bit_identical": {"tldr": False, "rtd": False},
            "machine": {"cpu": "cpu", "cpu_capability": "AVX2", "torch": "2"}}  # fmt: skip
    table = demo_spread.markdown(rows, [1, 2], meta)
    line = next(x for x in table.splitlines() if "unseen gain" in x)
    assert line.split(" | ")[2:] == ["10.50", "9.00", "1.50", ">= 10.00", "-1.00", "**NO** |"]
    tldr = next(x for x in table.splitlines() if "TLDR - ERM" in x)
    assert "75.50 %" in tldr and "+50.50 %" in tldr and tldr.endswith("yes |")
    assert "tldr: no, rtd: no" in table


def test_run_cache_links_the_machine_cache_and_dropping_it_keeps_it(tmp_path):
    machine = tmp_path / "machine"
    (machine / "tinyclip").mkdir(parents=True)
    (machine / "tinyclip" / "fit.safetensors").write_bytes(b"weights")
    cache = demo_spread.fresh_cache(tmp_path / "run", machine)
    assert (cache / "tinyclip" / "fit.safetensors").read_bytes() == b"weights"
    assert (cache / "toy").is_symlink() and (machine / "toy").is_dir()
    (cache / "tldr").mkdir()  # what a run trains lands in its own cache
    demo_spread.drop_cache(cache)
    assert not cache.exists()
    assert (machine / "tinyclip" / "fit.safetensors").read_bytes() == b"weights"
