"""The tldr demo of `make demo-tldr` (and of its effect gate), offline on the toy world.

Does retraining the last layer on projected words (TLDR, no group labels) undo the toy
classifier's reliance on the background, and how does it compare with DFR (which uses the
group labels of validation images)? Four steps, each an ordinary `tldr` command run in
this process (the same argv a user would type; printed before it runs):

    tldr generate --offline-toy        the shipped toy word lists (no LLM)
    tldr filter --preset toy           stage 1 (CLIP anchors) and stage 2 (ERM head)
    tldr retrain --preset toy          ERM vs TLDR vs DFR on the balanced test split
    tldr compare                       paired differences, 95 % intervals, p-values

The toy seed (`--toy-seed`) draws the spurious split (which digits, colours and crops) and
the bootstrap; the training seeds are the preset's. The ERM classifier, the toy backbone
and the features are cached (`LABSHARED_CACHE`), so a second run is faster.

Run: `python -m tldr_cli.demo [--toy-seed 0] [--out runs/tldr/demo/seed-0]`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer

from labshared.cli import run_steps
from labshared.compare import format_comparison
from labshared.console import render_table
from labshared.errors import ConfigError
from labshared.runs import atomic_write_json, atomic_write_text
from labshared.stats import BootstrapSpec
from tldr_cli.cli import app
from tldr_cli.outputs import compare_runs, headlines

TABLE = "demo_table.md"
METHODS = ("ERM", "TLDR", "DFR")


@dataclass(frozen=True)
class DemoConfig:
    """What a demo run varies.

    Attributes:
        toy_seed: the toy world's data seed (spurious split, bootstrap).
        device: where filter and retrain run (the gate: cpu).
        filter_args, retrain_args: more flags of those steps, appended last (e.g.
            `--toy-n-train 200` for a quick look; the gate's thresholds hold for the
            preset's sizes).
    """

    toy_seed: int = 0
    device: str = "cpu"
    filter_args: tuple[str, ...] = ()
    retrain_args: tuple[str, ...] = ()


def default_out(toy_seed: int) -> Path:
    """`runs/tldr/demo/seed-N`: another toy seed never overwrites seed 0's runs."""
    return Path("runs/tldr/demo") / f"seed-{toy_seed}"


def demo_commands(cfg: DemoConfig, out: Path) -> list[tuple[str, list[str]]]:
    """(step name, `tldr` argv) of the three commands that make runs, in order."""
    common = ["--preset", "toy", "--toy-seed", str(cfg.toy_seed), "--device", cfg.device]
    return [
        ("generate", ["generate", "--offline-toy", "-o", str(out / "generate"), "--overwrite"]),
        ("filter", ["filter", *common, "--words", str(out / "generate" / "wordlists.json"),
                    "-o", str(out / "filter"), "--overwrite", *cfg.filter_args]),
        ("retrain", ["retrain", *common, "--method", "both",
                     "--words", str(out / "filter" / "wordlists.json"),
                     "-o", str(out / "retrain"), "--overwrite", *cfg.retrain_args]),
    ]  # fmt: skip


def run_demo(cfg: DemoConfig, out: str | Path) -> dict[str, Any]:
    """Run the demo into `out`; returns (and writes to `demo.json`) the figures: each
    method's test metrics, the filter's counts, the paired comparison and each step's
    cost. Writes `demo_table.md` (`format_markdown`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = run_steps(app, "tldr", demo_commands(cfg, out))
    metrics = json.loads((out / "retrain" / "metrics.json").read_text())
    report = json.loads((out / "filter" / "filter_report.json").read_text())
    paired = compare_runs([str(out / "retrain")], BootstrapSpec(seed=cfg.toy_seed))
    test = metrics["test"]
    result = {
        "config": asdict(cfg),
        "test": test,
        "gain_worst_group": test["TLDR"]["worst_group_acc"] - test["ERM"]["worst_group_acc"],
        "filter": {k: report[k] for k in ("before", "after", "removed_stage1", "removed_stage2")},
        "paired": paired,
        "steps": steps,
        "wall_s": round(sum(s["wall_s"] for s in steps.values()), 1),
        "cpu_s": round(sum(s["cpu_s"] for s in steps.values()), 1),
        "commands": [f"tldr {shlex.join(argv)}" for _, argv in demo_commands(cfg, out)]
        + [f"tldr compare {out / 'retrain'} --seed {cfg.toy_seed}"],
    }
    atomic_write_json(out / "demo.json", result)
    atomic_write_text(out / TABLE, format_markdown(result))
    return result


def format_markdown(result: dict[str, Any]) -> str:
    """The demo's report: the filter's counts, the paired comparison of ERM, TLDR and DFR
    (the `tldr compare` table) and the cost, as Markdown."""
    f = result["filter"]
    counts = [
        [f"{kind}.{name}", n, f["after"][kind][name]]
        for kind in ("classes", "spurious")
        for name, n in f["before"][kind].items()
    ]
    cost = [[k, f"{v['wall_s']:.0f}", f"{v['cpu_s']:.0f}"] for k, v in result["steps"].items()]
    cost.append(["total", f"{result['wall_s']:.0f}", f"{result['cpu_s']:.0f}"])
    blocks = [
        f"tldr demo, toy world, toy seed {result['config']['toy_seed']}: ERM vs TLDR vs DFR "
        "on the balanced test split",
        f"word filter: {f['removed_stage1']} words removed by the CLIP anchors (stage 1), "
        f"{f['removed_stage2']} by the ERM head (stage 2)\n\n"
        + render_table(["list", "words before", "after"], counts, markdown=True),
        format_comparison(result["paired"], headlines(), markdown=True),
        f"TLDR - ERM worst-group: {100 * result['gain_worst_group']:+.1f} points",
        render_table(["step", "wall s", "CPU s"], cost, markdown=True),
    ]
    return "\n\n".join(blocks) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tldr_cli.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--toy-seed", type=int, default=0, help="the toy world's data seed")
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default runs/tldr/demo/seed-N)"
    )
    parser.add_argument("--device", default="cpu", help="device of filter and retrain (cpu)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_out(args.toy_seed)
    try:
        result = run_demo(DemoConfig(args.toy_seed, args.device), out)
    except ConfigError as exc:
        parser.exit(1, f"error: {exc}\n")
    typer.echo((out / TABLE).read_text())
    gain = 100 * result["gain_worst_group"]
    typer.echo(f"figures: {out / 'demo.json'} (TLDR - ERM worst-group {gain:+.1f} points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
