"""The rtd demo of `make demo-rtd` (and of its effect gate), offline on the toy CIR world.

Does RTD's text-tower fine-tuning make a LinCIR-style base retrieve the right target more
often, and for which kind of modification? Five steps, each an ordinary `rtd` command run
in this process (the same argv a user would type; printed before it runs):

    rtd train-phi --preset toy    LinCIR-style phi from toy captions (text only)
    rtd eval --dataset toy        base: phi + the tiny CLIP's own text tower
    rtd train --preset toy        RTD on toy text triplets (text only), phi frozen
    rtd eval --dataset toy        + RTD: the same phi with the trained text tower
    rtd compare                   paired table (95 % intervals, p-values), per-attribute
                                  table and a bar chart

The benchmark is the toy world's `test` split (digit instances and background crops never
seen by the tiny CLIP's fit, by phi or by RTD, which see text only), with the size `rtd
eval`'s defaults give (`config.TOY_EVAL_QUERIES` queries; their targets plus
`config.TOY_EVAL_DISTRACTORS` distractors in the gallery). The toy seed (`--toy-seed`)
draws the captions, the triplets and the benchmark; the training seeds are the presets'.

Run: `python -m rtd_cli.demo [--toy-seed 0] [--out runs/rtd/demo/seed-0]`: each toy seed
has its own folder (`demo_dir`), so another seed does not overwrite seed 0's runs.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import typer

from labshared import toy
from labshared.cli import run_steps
from labshared.compare import format_comparison
from labshared.console import render_table
from labshared.data.text_triplets import load_text_triplets
from labshared.errors import ConfigError
from labshared.items import read_items
from labshared.launch import read_header
from labshared.runs import atomic_write_json, atomic_write_text
from rtd_cli import compare
from rtd_cli.cli import app
from rtd_cli.model import TINY_BACKBONE, weights_identity

NAMES = ("LinCIR-style phi (toy)", "+ RTD text tower")
DEMO_ROOT = Path("runs/rtd/demo")
CHART = "rtd_toy_by_attribute.png"
TABLE = "demo_table.md"


@dataclass(frozen=True)
class DemoConfig:
    """What a demo run varies.

    Attributes:
        toy_seed: the toy world's data seed (captions, triplets, benchmark).
        split: the toy benchmark's split (val or test; test by default, so that nothing
            chosen while building the presets, which looked at val, is scored).
        device: where every step runs (the demo and CI: cpu).
        train_args: extra `rtd train` flags, appended last (e.g. `--lr 1e-12` to show
            that the effect gate fails when RTD learns nothing).
        threads: torch intra-op threads while the demo runs. One by default: the tiny
            CLIP's matrices are too small to gain from a second thread, and on a busy
            2-core machine two OpenMP threads made a train-phi step about ten times
            slower (2.3 s vs 0.21 s wall, measured), spinning at each barrier.
    """

    toy_seed: int = 0
    split: str = "test"
    device: str = "cpu"
    train_args: tuple[str, ...] = ()
    threads: int = 1


def demo_dir(toy_seed: int, root: Path = DEMO_ROOT) -> Path:
    """The demo's folder for one toy seed: `runs/rtd/demo/seed-N` (`make demo-rtd`)."""
    return Path(root) / f"seed-{toy_seed}"


def demo_commands(cfg: DemoConfig, out: Path) -> list[tuple[str, list[str]]]:
    """(step name, `rtd` argv) of the four commands, in order."""
    phi = str(out / "phi" / "phi.pt")
    tower = str(out / "train" / "text_tower.safetensors")
    common = ["--device", cfg.device, "--toy-seed", str(cfg.toy_seed)]
    evaluate = ["eval", "--dataset", "toy", "--split", cfg.split, "--backbone", "tiny-clip-toy",
                "--base", "lincir", "--phi", phi, *common]  # fmt: skip
    train_phi = ["train-phi", "--preset", "toy", *common, "-o", str(out / "phi"), "--overwrite"]
    train = ["train", "--preset", "toy", "--phi", phi, *common, "-o", str(out / "train"),
             "--overwrite", *cfg.train_args]  # fmt: skip
    return [
        ("train-phi", train_phi),
        ("eval-base", [*evaluate, "-o", str(out / "eval-base"), "--overwrite"]),
        ("train", train),
        (
            "eval-rtd",
            [*evaluate, "--text-encoder", tower, "-o", str(out / "eval-rtd"), "--overwrite"],
        ),
    ]


def seen_triplet_split(out: Path) -> dict[str, dict[str, float]]:
    """R@1 of base and + RTD on the benchmark queries whose text triplet (reference caption,
    modification, target caption) is among RTD's training triplets ("seen") and on the
    others ("unseen"), from the two evals' per-query tables (items/queries.parquet).

    Both sides come from one caption grammar, so part of the benchmark's text triplets also
    occur, as text, in training (about a quarter at 5,000 triplets); this split shows whether
    the gain rests on those. The benchmark is rebuilt from the eval's config.json (the toy
    world is deterministic in its seed) and the triplets from the train run's.
    """
    bench = read_header(out / "eval-base")["config"]
    trained = read_header(out / "train")["config"]
    world = toy.modification_triplets(
        bench["split"] or "val", bench["toy_queries"], n_distractors=bench["toy_distractors"],
        seed=bench["toy_seed"],
    )  # fmt: skip
    data = load_text_triplets(trained["triplets"], toy_seed=trained["toy_seed"])
    train = {(t.reference, t.conditioning, t.target) for t in data.triplets}
    seen = [
        (r, c, t) in train
        for r, c, t in zip(
            world.reference_captions, world.texts, world.target_captions, strict=True
        )
    ]
    hits = {}
    for run in ("eval-base", "eval-rtd"):
        rows = read_items(out / run, compare.ITEMS).to_pylist()
        hits[run] = {int(row["query_id"]): row["first_rank"] == 1 for row in rows}
    split = {}
    for name, flag in (("seen", True), ("unseen", False)):
        ids = [i for i, s in enumerate(seen) if s == flag]
        split[name] = {
            "queries": len(ids),
            "base_r1": 100 * sum(hits["eval-base"][i] for i in ids) / max(len(ids), 1),
            "rtd_r1": 100 * sum(hits["eval-rtd"][i] for i in ids) / max(len(ids), 1),
        }
    return split


def run_demo(cfg: DemoConfig, out: str | Path) -> dict[str, Any]:
    """Run the demo into `out`; returns (and writes to `demo.json`) the figures: both
    runs' summaries and per-attribute metrics, the gains, sizes and each step's cost."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        steps = run_steps(app, "rtd", demo_commands(cfg, out))
    finally:
        torch.set_num_threads(threads)
    runs = [out / "eval-base", out / "eval-rtd"]
    base, rtd = (compare.read_metrics(r) for r in runs)
    paired, heads = compare.paired_comparison(runs, NAMES, seed=cfg.toy_seed)
    table = format_comparison(paired, heads, markdown=True)
    by_attribute = compare.attribute_table(runs, NAMES)
    chart = compare.write_chart(
        runs, out / CHART, NAMES, "R@1",
        title=f"RTD on the toy CIR world ({base['split']}, toy seed {cfg.toy_seed})",
    )  # fmt: skip
    gains = {
        group: rtd["by_attribute"][group]["R@1"] - base["by_attribute"][group]["R@1"]
        for group in compare.attribute_groups([base, rtd])
    }
    result = {
        "config": asdict(cfg),
        # which fit of the tiny CLIP (its cache key): the figures depend on it
        "tiny_clip": weights_identity(TINY_BACKBONE, None),
        "split": base["split"],
        "queries": sum(base["n_queries"].values()),
        "gallery": sum(base["n_gallery"].values()),
        "attribute_queries": base.get("attribute_queries", {}),
        "base": {"summary": base["summary"], "by_attribute": base.get("by_attribute", {})},
        "rtd": {"summary": rtd["summary"], "by_attribute": rtd.get("by_attribute", {})},
        "gain_r1": rtd["summary"]["R@1"] - base["summary"]["R@1"],
        # the paired comparison: each metric's difference, 95 % interval and p-value
        "paired": paired["metrics"],
        "bootstrap": paired["bootstrap"],
        "gain_r1_by_attribute": gains,
        "seen_triplets": seen_triplet_split(out),
        "steps": steps,
        "wall_s": round(sum(s["wall_s"] for s in steps.values()), 1),
        "cpu_s": round(sum(s["cpu_s"] for s in steps.values()), 1),
        "commands": [f"rtd {shlex.join(argv)}" for _, argv in demo_commands(cfg, out)]
        + [
            f"rtd compare {shlex.join(map(str, runs))} --name '{NAMES[0]}' --name '{NAMES[1]}' "
            f"--seed {cfg.toy_seed} --chart {out / CHART}"
        ],
        "chart": str(chart),
    }
    atomic_write_json(out / "demo.json", result)
    atomic_write_text(out / TABLE, format_markdown(result, table, by_attribute))
    return result


def format_markdown(result: dict[str, Any], table: str, by_attribute: str) -> str:
    """The demo's report: sizes, both tables, the R@1 gains, the seen / unseen split and the
    cost, as Markdown."""
    gains = [["all", f"{result['gain_r1']:+.2f}"]]
    gains += [[k, f"{v:+.2f}"] for k, v in result["gain_r1_by_attribute"].items()]
    seen = [
        [k, v["queries"], f"{v['base_r1']:.2f}", f"{v['rtd_r1']:.2f}"]
        for k, v in result["seen_triplets"].items()
    ]
    cost = [[k, f"{v['wall_s']:.0f}", f"{v['cpu_s']:.0f}"] for k, v in result["steps"].items()]
    cost.append(["total", f"{result['wall_s']:.0f}", f"{result['cpu_s']:.0f}"])
    head = (
        f"rtd demo, toy CIR world: {result['split']} split, toy seed "
        f"{result['config']['toy_seed']}, {result['queries']} queries, "
        f"{result['gallery']}-image gallery, tiny CLIP {result['tiny_clip']}"
    )
    blocks = [
        head,
        table,
        f"by changed attribute (number of queries):\n\n{by_attribute}",
        render_table(["queries changing", "R@1 gain of + RTD"], gains, markdown=True),
        "R@1 on the queries whose text triplet is among RTD's training triplets (as text), "
        "and on the others:\n\n"
        + render_table(["triplet", "queries", "R@1 base", "R@1 + RTD"], seen, markdown=True),
        render_table(["step", "wall s", "CPU s"], cost, markdown=True),
        f"chart: {result['chart']}",
    ]
    return "\n\n".join(blocks) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rtd_cli.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, help=f"run folder (default {DEMO_ROOT}/seed-N)")
    parser.add_argument("--toy-seed", type=int, default=0, help="the toy world's data seed")
    parser.add_argument("--split", default="test", choices=("val", "test"), help="toy split")
    parser.add_argument("--device", default="cpu", help="device of every step (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    args.out = args.out or demo_dir(args.toy_seed)
    try:
        cfg = DemoConfig(args.toy_seed, args.split, args.device, threads=args.threads)
        result = run_demo(cfg, args.out)
    except ConfigError as exc:
        parser.exit(1, f"error: {exc}\n")
    typer.echo((args.out / TABLE).read_text())
    typer.echo(f"figures: {args.out / 'demo.json'} (R@1 gain {result['gain_r1']:+.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
