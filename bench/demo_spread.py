"""How much the demo figures move: each effect gate's pipeline under several thread counts.

For each tool (tldr, robattr, rtd) and each torch intra-op thread count (`--threads 1,2`),
one fresh subprocess sets `torch.set_num_threads(N)` (and OMP_NUM_THREADS / MKL_NUM_THREADS
to N) and runs exactly what the effect gate in tests/effects/ runs at toy seed
`--toy-seed`: tldr's three CLI commands (`test_tldr_effect.run_pipeline`),
`robattr_cli.demo.run_demo`, `rtd_cli.demo.run_demo`. It collects the headline figures the
gates check and writes, per figure, each run's value, min, max, spread (max - min) and the
gate's margin (value - threshold, thresholds imported from the gate modules), as
`<out>/demo_spread.json` and `<out>/demo_spread.md`.

Each run gets its own empty cache (`LABSHARED_CACHE=<run>/cache`): a run must not reuse
what an earlier run trained (tldr caches its toy backbone, ERM classifier and features),
or the spread would be zero by construction. Only the tiny CLIP's full fit (fitted once per
machine at pinned threads, `labshared.tinyclip.fit.FIT_THREADS`) and the toy world's source
data are shared, linked from the machine cache ($LABSHARED_CACHE or ~/.cache/labshared).
The spread is over thread counts on THIS machine; another CPU (instruction set, torch
build) may give other figures, and its tiny CLIP fit differs too.

Usage: python bench/demo_spread.py [--tools tldr,robattr,rtd] [--threads 1,2]
       [--toy-seed 0] [--out runs/demo-spread]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("tldr", "robattr", "rtd")
SHARED_CACHE = ("tinyclip", "toy")  # what every run links from the machine cache
FIGURES_FILE = "figures.json"


def gate_module(tool: str):
    """tests/effects/test_<tool>_effect.py, imported by path (tests/ is no package)."""
    path = ROOT / "tests" / "effects" / f"test_{tool}_effect.py"
    spec = importlib.util.spec_from_file_location(f"_gate_{tool}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the child runs
def figures_tldr(out: Path, toy_seed: int) -> dict[str, float]:
    test, _ = gate_module("tldr").run_pipeline(out, toy_seed)
    figures = {}
    for method in ("ERM", "TLDR", "DFR"):
        figures[f"{method} worst-group"] = test[method]["worst_group_acc"]
        figures[f"{method} average"] = test[method]["average_acc"]
    figures["TLDR - ERM worst-group"] = (
        test["TLDR"]["worst_group_acc"] - test["ERM"]["worst_group_acc"]
    )
    return figures


def figures_robattr(out: Path, toy_seed: int) -> dict[str, float]:
    from robattr_cli.demo import GATE_COMPARISONS, GATE_METRIC, DemoConfig, run_demo

    result = run_demo(DemoConfig(toy_seed=toy_seed), out)
    figures = {f"accuracy {m}": a for m, a in result["accuracy"].items()}
    figures["min accuracy"] = min(result["accuracy"].values())
    for name in GATE_COMPARISONS:
        ci = result["comparisons"][name][GATE_METRIC]
        figures[f"top-k diff {name} mean"] = ci["mean"]
        figures[f"top-k diff {name} low"] = ci["low"]
    return figures


def figures_rtd(out: Path, toy_seed: int) -> dict[str, float]:
    from rtd_cli.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(toy_seed=toy_seed), out)
    unseen = result["seen_triplets"]["unseen"]
    return {
        "base R@1": result["base"]["summary"]["R@1"],
        "+ RTD R@1": result["rtd"]["summary"]["R@1"],
        "gain R@1": result["gain_r1"],
        "unseen base R@1": unseen["base_r1"],
        "unseen + RTD R@1": unseen["rtd_r1"],
        "unseen gain R@1": unseen["rtd_r1"] - unseen["base_r1"],
    }


def child(tool: str, threads: int, toy_seed: int, out: Path) -> None:
    """One (tool, threads) run in this fresh process; writes `out/figures.json`."""
    import torch

    torch.set_num_threads(threads)
    start, cpu = time.perf_counter(), time.process_time()
    figures = {"tldr": figures_tldr, "robattr": figures_robattr, "rtd": figures_rtd}[tool](
        out / "run", toy_seed
    )
    record = {
        "tool": tool,
        "threads": threads,
        "torch_threads_after": torch.get_num_threads(),
        "figures": figures,
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s_main_process": round(time.process_time() - cpu, 1),
    }
    (out / FIGURES_FILE).write_text(json.dumps(record, indent=1))


# --------------------------------------------------------------------------- the parent
def machine_cache() -> Path:
    from labshared.cache import cache_root

    return cache_root()


def ensure_full_tiny_clip() -> str:
    """Fit (or find) the full tiny CLIP in the machine cache before any run links it."""
    from labshared.tinyclip.fit import FitConfig, ensure_tiny_clip

    return str(ensure_tiny_clip(fit=FitConfig()))


def fresh_cache(run_dir: Path, shared: Path) -> Path:
    """An empty cache for one run, with the machine cache's tiny CLIP and toy data linked."""
    cache = run_dir / "cache"
    if cache.exists():
        drop_cache(cache)
    cache.mkdir(parents=True)
    for name in SHARED_CACHE:
        (shared / name).mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to((shared / name).resolve(), target_is_directory=True)
    return cache


def drop_cache(cache: Path) -> None:
    for name in SHARED_CACHE:  # unlink the links first: never delete the machine cache
        if (cache / name).is_symlink():
            (cache / name).unlink()
    shutil.rmtree(cache)


def run_one(tool: str, threads: int, args, shared: Path) -> dict:
    run_dir = args.out / f"{tool}-t{threads}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FIGURES_FILE).unlink(missing_ok=True)
    cache = fresh_cache(run_dir, shared)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env |= {"LABSHARED_CACHE": str(cache), "LABSHARED_TINY_CLIP_FIT": "full"}
    env |= {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    argv = [sys.executable, __file__, "--child", tool, "--threads", str(threads)]
    argv += ["--toy-seed", str(args.toy_seed), "--out", str(run_dir)]
    print(f"{tool} at {threads} thread(s): log {run_dir / 'log.txt'}", flush=True)
    start = time.perf_counter()
    with open(run_dir / "log.txt", "w") as logfile:
        code = subprocess.call(argv, env=env, stdout=logfile, stderr=subprocess.STDOUT)
    if not args.keep_cache:
        drop_cache(cache)
    if code != 0:
        tail = (run_dir / "log.txt").read_text().splitlines()[-30:]
        raise SystemExit(f"{tool} at {threads} threads failed ({code}):\n" + "\n".join(tail))
    record = json.loads((run_dir / FIGURES_FILE).read_text())
    record["process_wall_s"] = round(time.perf_counter() - start, 1)
    print(f"  done in {record['process_wall_s']:.0f} s", flush=True)
    return record


def gate_thresholds() -> dict[tuple[str, str], tuple[float, str]]:
    """(tool, figure) -> (threshold the gate requires the figure to reach, where it is)."""
    tldr, robattr, rtd = (gate_module(t) for t in TOOLS)
    from robattr_cli.demo import GATE_COMPARISONS

    gates = {
        ("tldr", "TLDR - ERM worst-group"): (
            tldr.MIN_WORST_GROUP_GAIN,
            "test_tldr_effect.MIN_WORST_GROUP_GAIN",
        ),
        ("tldr", "TLDR average"): (tldr.MIN_AVERAGE, "test_tldr_effect.MIN_AVERAGE"),
        ("robattr", "min accuracy"): (robattr.MIN_ACCURACY, "test_robattr_effect.MIN_ACCURACY"),
        ("rtd", "gain R@1"): (rtd.MIN_GAIN_R1, "test_rtd_effect.MIN_GAIN_R1"),
        ("rtd", "unseen gain R@1"): (rtd.MIN_GAIN_R1, "test_rtd_effect.MIN_GAIN_R1"),
    }
    for name in GATE_COMPARISONS:  # the gate: the 95 % interval's low end above 0
        gates[("robattr", f"top-k diff {name} low")] = (0.0, "robattr gate: ci['low'] > 0")
    return gates


def summarise(records: list[dict], threads: list[int]) -> list[dict]:
    gates = gate_thresholds()
    rows = []
    for tool in dict.fromkeys(r["tool"] for r in records):
        runs = {r["threads"]: r["figures"] for r in records if r["tool"] == tool}
        for figure in next(iter(runs.values())):
            values = {t: runs[t][figure] for t in threads if t in runs}
            lo, hi = min(values.values()), max(values.values())
            row = {"tool": tool, "figure": figure, "values": values, "min": lo, "max": hi,
                   "spread": hi - lo}  # fmt: skip
            if (tool, figure) in gates:
                threshold, where = gates[(tool, figure)]
                row |= {"threshold": threshold, "threshold_from": where,
                        "worst_margin": lo - threshold,
                        "margin_exceeds_spread": lo - threshold > hi - lo}  # fmt: skip
            rows.append(row)
    return rows


def _fmt(tool: str, value: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if tool == "tldr":  # accuracies as percent
        return f"{100 * value:{sign}.2f} %"
    if tool == "rtd":  # R@1 is already in points
        return f"{value:{sign}.2f}"
    return f"{value:{sign}.4f}"


def markdown(rows: list[dict], threads: list[int], meta: dict) -> str:
    head = ["tool", "figure", *(f"{t} thread{'s' * (t > 1)}" for t in threads), "spread",
            "gate", "worst margin", "margin > spread"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 3) + "---|"]
    for r in rows:
        t = r["tool"]
        cells = [
            t,
            r["figure"],
            *(_fmt(t, r["values"][n]) if n in r["values"] else "" for n in threads),
        ]
        cells.append(_fmt(t, r["spread"]))
        if "threshold" in r:
            op = "> " if r["threshold_from"].endswith("> 0") else ">= "
            cells += [op + _fmt(t, r["threshold"]), _fmt(t, r["worst_margin"], signed=True),
                      "yes" if r["margin_exceeds_spread"] else "**NO**"]  # fmt: skip
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    identical = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in meta["bit_identical"].items())
    return (
        f"Demo figures at toy seed {meta['toy_seed']} under torch threads "
        f"{', '.join(map(str, threads))} on {meta['machine']['cpu']} "
        f"({meta['machine']['cpu_capability']}, torch {meta['machine']['torch']}); "
        f"{meta['wall_s']:.0f} s wall. Identical figures across thread counts: {identical}.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def parent(args) -> None:
    from labshared.runs import atomic_write_json, atomic_write_text

    threads = [int(t) for t in args.threads.split(",")]
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or len(threads) < 2:
        raise SystemExit(f"--tools from {', '.join(TOOLS)}; --threads at least two counts")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"tiny CLIP (full fit): {ensure_full_tiny_clip()}", flush=True)
    shared = machine_cache()
    records = [run_one(tool, n, args, shared) for tool in tools for n in threads]
    rows = summarise(records, threads)
    meta = {
        "toy_seed": args.toy_seed,
        "threads": threads,
        "machine": machine(),
        "wall_s": round(time.perf_counter() - start, 1),
        "bit_identical": {
            tool: all(r["spread"] == 0 for r in rows if r["tool"] == tool) for tool in tools
        },
    }
    atomic_write_json(args.out / "demo_spread.json", {**meta, "runs": records, "figures": rows})
    table = markdown(rows, threads, meta)
    atomic_write_text(args.out / "demo_spread.md", table)
    print(table)
    print(f"written {args.out / 'demo_spread.json'} and {args.out / 'demo_spread.md'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, in order")
    parser.add_argument("--threads", default="1,2", help="torch thread counts (1,2)")
    parser.add_argument("--toy-seed", type=int, default=0, help="the toy world's data seed (0)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo-spread"), help="folder")
    parser.add_argument("--keep-cache", action="store_true", help="keep each run's own cache")
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.child:
        child(args.child, int(args.threads), args.toy_seed, args.out)
    else:
        parent(args)


if __name__ == "__main__":
    main()
