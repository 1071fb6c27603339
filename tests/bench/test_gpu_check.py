"""bench/gpu_check.py: its --smoke run (the GPU check's code on the CPU, so it cannot rot),
its time budget, its isolation of failing sections, and the MFU arithmetic."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPT = BENCH / "gpu_check.py"
#: A hang guard for the script's subprocess runs, not a speed requirement: no test here
#: asserts how long anything takes (speed belongs in `make bench` / `make bench-gpu`).
HANG_GUARD_S = 1200


@pytest.fixture
def gc(monkeypatch):
    """The gpu_check module, imported as `python bench/gpu_check.py` sees it."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check

    return gpu_check


def _run(*args: str, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
        timeout=timeout, cwd=BENCH.parent,
    )  # fmt: skip


def _number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


# fields every row of a section must carry as numbers
REQUIRED = {
    "rtd_train": ("s_per_step", "steps_per_s", "peak_mem_gib", "minutes_2000_steps", "time_vs_all"),
    "gallery": ("img_per_s", "peak_mem_gib"),
    "retrieval": ("seconds", "queries_per_s", "peak_mem_gib"),
    "robattr": ("ms_per_step", "img_per_s", "peak_mem_gib", "time_vs_none"),
    "tldr": ("seconds", "peak_mem_gib"),
}


def test_smoke_reports_every_section_with_numbers(tmp_path, gc):
    out = tmp_path / "report.json"
    proc = _run("--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == report  # stdout: table + JSON
    assert report["smoke"] and report["device"] == "cpu"
    assert list(report["sections"]) == list(gc.S.SECTIONS)
    for name, entry in report["sections"].items():
        assert entry["status"] == "ok" and not entry["errors"], (name, entry)
        assert entry["rows"], name
        for row in entry["rows"]:
            for field in REQUIRED[name]:
                assert _number(row[field]), (name, row["case"], field, row.get(field))
            assert name in proc.stdout and row["case"] in proc.stdout
    rtd = report["sections"]["rtd_train"]
    import rtd_train_bench

    ran = {r["case"] for r in rtd["rows"]}
    assert ran | {s.split(":")[0] for s in rtd["skipped"]} == set(rtd_train_bench.VARIANTS)
    assert "all" in ran and all(r["mfu"] is None for r in rtd["rows"])  # CPU: no bf16 peak
    assert "MFU n/a" in proc.stdout
    assert {r["regularizer"] for r in report["sections"]["robattr"]["rows"]} == {
        "none", "l2cos", "hessian"
    }  # fmt: skip
    gallery = report["sections"]["gallery"]["rows"]
    assert [r["case"] for r in gallery] == ["cpu decode", "gpu decode"]
    projector = report["sections"]["tldr"]["rows"][0]
    assert projector["constraint"] < 1e-9  # g W = 0: the real solve ran


def test_spent_budget_skips_sections_and_says_so(tmp_path):
    out = tmp_path / "report.json"
    proc = _run("--smoke", "--sections", "retrieval,tldr", "--budget-s", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sections = json.loads(out.read_text())["sections"]
    assert list(sections) == ["retrieval", "tldr"]
    for entry in sections.values():
        assert entry["status"] == "skipped" and not entry["rows"]
        assert any("time budget spent" in s for s in entry["skipped"])
    assert "time budget spent" in proc.stdout


def test_unknown_section_is_a_usage_error():
    proc = _run("--sections", "retrieval,nope")
    assert proc.returncode == 2 and "unknown nope" in proc.stderr


class FakeClock:
    """`time.time` of a module under test: moves only when the test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def time(self) -> float:
        return self.now


def test_rtd_variants_after_the_deadline_are_skipped(gc, monkeypatch):
    """A variant starts only when the previous one's duration still fits the budget (a
    fake clock: each variant takes 0.3 s of it, whatever the machine's speed)."""
    import types

    calls = []
    clock = FakeClock()
    monkeypatch.setattr(gc.S, "time", clock)

    def run_variants(*, device, backbone, batch_size, steps, warmup, names):
        calls.append(names)
        clock.now += 0.3
        return [{"variant": names[0], "s_per_step": 0.1, "steps_per_s": 10.0,
                 "peak_mem_gib": 1.0, "flop_per_step": 1e9, "seq_len": 8}]  # fmt: skip

    fake = types.SimpleNamespace(VARIANTS={"all": {}, "a": {}, "b": {}, "c": {}},
                                 run_variants=run_variants)  # fmt: skip
    monkeypatch.setitem(sys.modules, "rtd_train_bench", fake)
    sent = []
    deadline = clock.now + 0.5  # a fits (0.3 s), b would end past the deadline
    gc.S.rtd_train(gc.SMOKE, "cpu", deadline, sent.append, "ablations")
    assert calls == [["a"]]
    assert [m["row"]["case"] for m in sent if m["kind"] == "row"] == ["a"]
    assert [m["case"] for m in sent if m["kind"] == "skipped"] == ["b", "c"]


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("raise", "RuntimeError: broken section"), ("crash", "process died (exit code 3)"),
     ("hang", None)],
)  # fmt: skip
def test_a_failing_section_reports_instead_of_raising(gc, monkeypatch, behaviour, expected):
    """The parent's clock is fake: it reaches the deadline only once the hanging child has
    sent its messages (a forked Event), so no outcome depends on the machine's speed."""
    import multiprocessing

    hanging = multiprocessing.get_context("fork").Event()

    def job(job, sizes, device, deadline, send):
        send({"kind": "row", "row": {"case": "first"}})
        if behaviour == "raise":
            raise RuntimeError("broken section")
        if behaviour == "crash":
            os._exit(3)
        send({"kind": "start", "case": "slow case"})
        hanging.set()
        time.sleep(HANG_GUARD_S)  # killed at the deadline long before

    clock = type("Clock", (), {"time": staticmethod(lambda: 2.0 if hanging.is_set() else 0.0)})
    monkeypatch.setattr(gc, "time", clock)
    monkeypatch.setattr(gc.S, "run_job", job)  # the forked child runs the patched module
    gc.S.preload([])  # torch imported before forking, as main() does
    messages = gc.run_forked(("x", None), gc.SMOKE, "cpu", 1.0)
    assert messages[0] == {"kind": "row", "row": {"case": "first"}}
    if expected is None:  # stopped by the budget: skipped, named, not an error
        assert messages[-1] == {
            "kind": "skipped",
            "case": "slow case",
            "reason": "stopped at the time budget",
        }
    else:
        assert messages[-1] == {"kind": "error", "error": expected}


def test_mfu_uses_the_documented_peak_table(gc):
    assert gc.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gc.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert gc.peak_bf16_flops("NVIDIA H200") == 989e12
    assert gc.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gc.peak_bf16_flops("NVIDIA GeForce RTX 4090") is None
    row = {"case": "all", "s_per_step": 0.2, "flop_per_step": 54e12}
    derived = gc.S.derive("rtd_train", row, {"peak_bf16_flops": 989e12})
    assert derived["mfu"] == pytest.approx(54e12 / 0.2 / 989e12)
    assert derived["minutes_2000_steps"] == pytest.approx(2000 * 0.2 / 60)
    assert gc.S.derive("rtd_train", row, {"peak_bf16_flops": None})["mfu"] is None
