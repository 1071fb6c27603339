"""The robattr mini-experiment of `make demo` (and of the effect gate), offline on MNIST-5k.

Does the paper's `l2cos` make gradient maps more robust than plain training, by more than
the noise of the experiment? Four models of the `mnist-toy` preset (softplus(3) MNIST
CNN, 4 epochs on 4,000 real digits, the paper's lambda_l2 0.01 and lambda_cos 1) are
trained, two per regulariser, at training seeds s and s + 1 (a seed fixes the initial
weights and the batch order, so `none` and `l2cos` at one seed start from the same net):

    none, l2cos         training seed s
    none-2, l2cos-2     training seed s + 1

All four are scored on the SAME test digits: those that every model classifies
correctly, in an order drawn from the toy seed; the first `n_rps` of them for RPS
(uniform noise, `n_draws` draws, the same draws for every model), the first `n_topk` for
the Ghorbani top-k attack (`n_iter` sign steps, k = 77 of 784 pixels). Similarities are of
the perturbed map to the clean map: higher is more robust. Per digit and metric we take
paired differences and report their mean with a percentile-bootstrap 95 % interval over
digits (`labshared.stats.paired`, with its p-value):

    effect at seed s / s + 1     l2cos - none / l2cos-2 - none-2
    pooled effect                (l2cos + l2cos-2)/2 - (none + none-2)/2
    noise floor                  none-2 - none and l2cos-2 - l2cos: what changing only
                                 the training seed does

The digit intervals say how sure we are for these trained models; the noise floor says
how much a retraining moves the numbers, which the digit intervals do not cover.

The toy seed (`--toy-seed`) draws the 4,000 / 1,000 train/test split, the order in which
the common digits are taken, the RPS noise and the bootstrap; `--seed` is the training
seed. Budgets are 16/255 (the preset's training noise; MNIST's strokes are saturated and
4/255 barely moves a map). The official frame-target attack is left out here: at this
budget it barely moved either model's maps in an earlier run (PCC to the target -0.41 for
both) and it costs as much as the top-k attack; `robattr attack --attack frame` runs it.

Every job (one training, or one model's RPS or a slice of its top-k digits) runs in its own
process with one intra-op thread, `workers` at a time: these tiny convolutions gain
nothing from a second thread, while two processes keep two cores busy.

Run: `python -m robattr_cli.demo [--toy-seed N] [--out runs/robattr/demo/seed-N]` (each
toy seed its own folder, so another seed does not overwrite seed 0's runs). The jobs each
worker process runs are in `demo_jobs.py`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from labshared.compare import Entry, Headline, compare, format_comparison
from labshared.console import log, render_table
from labshared.errors import ConfigError
from labshared.runs import atomic_write_json, atomic_write_text
from labshared.stats import BootstrapSpec, Interval, paired
from robattr_cli.attributions import heatmap
from robattr_cli.demo_jobs import run_jobs, score_job, train_job
from robattr_cli.figures import save_pair_figure
from robattr_cli.manipulation import topk_attack
from robattr_cli.metrics import similarity_report
from robattr_cli.victim import load_victim

#: (name, regularizer, offset added to the training seed)
MODELS = (
    ("none", "none", 0),
    ("l2cos", "l2cos", 0),
    ("none-2", "none", 1),
    ("l2cos-2", "l2cos", 1),
)
#: paired comparisons (name, label, models averaged on the B side, on the A side): B - A
COMPARISONS = (
    ("effect_seed1", "l2cos - none, seed s", ("l2cos",), ("none",)),
    ("effect_seed2", "l2cos - none, seed s+1", ("l2cos-2",), ("none-2",)),
    ("effect_pooled", "l2cos - none, both seeds", ("l2cos", "l2cos-2"), ("none", "none-2")),
    ("floor_none", "none: seed s+1 - seed s", ("none-2",), ("none",)),
    ("floor_l2cos", "l2cos: seed s+1 - seed s", ("l2cos-2",), ("l2cos",)),
)
GATE_COMPARISONS = ("effect_seed1", "effect_seed2")
#: (key, label) of the paired metrics, per image: RPS and top-k attack similarities.
METRICS = (
    ("rps_pcc", "RPS: PCC"),
    ("rps_topk", "RPS: top-k intersection"),
    ("topk_topk", "top-k attack: top-k intersection"),
    ("topk_pcc", "top-k attack: PCC"),
    ("topk_spearman", "top-k attack: Spearman"),
)
GATE_METRIC = "topk_topk"
FIGURE = "robattr_none_vs_l2cos.png"
FIGURE_DIGITS = 4  # digits whose maps the figure shows (the first of the attacked ones)
TOPK_SLICE = 100  # top-k digits per job (jobs of similar length keep both workers busy)
#: Where `make demo-robattr` writes: one folder per toy seed (`demo_dir`).
DEMO_ROOT = Path("runs/robattr/demo")


def demo_dir(toy_seed: int) -> Path:
    """The demo's folder for a toy seed: `runs/robattr/demo/seed-<N>`."""
    return DEMO_ROOT / f"seed-{toy_seed}"


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo's numbers (saved in demo.json).

    Attributes:
        toy_seed: the toy world's data seed (split, digit order, RPS noise, bootstrap).
        seed: training seed of `none` and `l2cos` (`none-2`, `l2cos-2`: seed + 1).
        n_rps, n_topk: digits scored by RPS / attacked (the top-k ones are the first
            n_topk of the RPS ones).
        eps: RPS and attack budget in pixels/255. n_draws: RPS draws.
        n_iter: top-k attack iterations (Ghorbani's 100).
        n_resamples: bootstrap resamples. workers: parallel processes.
        epochs, limit_train: training overrides for smoke tests (None: the preset's).
    """

    toy_seed: int = 0
    seed: int = 1234
    n_rps: int = 500
    n_topk: int = 300
    eps: float = 16.0
    n_draws: int = 10
    n_iter: int = 100
    n_resamples: int = 10_000
    workers: int = 2
    epochs: int | None = None
    limit_train: int | None = None


# --------------------------------------------------------------------------- the demo
@torch.no_grad()
def correct_on_test(run_dirs: dict[str, str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels of the test split and each model's per-digit correctness."""
    correct: dict[str, np.ndarray] = {}
    labels = None
    for name, run_dir in run_dirs.items():
        model, _, dataset, _ = load_victim(run_dir, "last", None, torch.device("cpu"))
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        y = torch.as_tensor(np.asarray(dataset.labels))
        correct[name] = (model(x).argmax(1) == y).numpy()
        labels = y.numpy()
    return labels, correct


def run_demo(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Train, score and compare; writes demo.json and demo_table.md into `out`.

    Returns:
        {"config", "accuracy": {model: test accuracy}, "n_common", "means":
        {model: {metric: mean}}, "comparisons": {comparison: {metric: Interval as a
        dict}} (names in `COMPARISONS`), "timing"}.

    Raises:
        ConfigError: fewer common correct digits than `n_rps`, or bad sizes.
    """
    if not 2 <= cfg.n_topk <= cfg.n_rps:
        raise ConfigError(f"--n-topk {cfg.n_topk} / --n-rps {cfg.n_rps}: need 2 <= n-topk <= n-rps")
    start, cpu = time.perf_counter(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(MODELS, key=lambda m: m[1] == "none")  # the long l2cos job first
    trained = run_jobs(
        [(train_job, name, reg, cfg.seed + off, cfg, str(out / name / "train"))
         for name, reg, off in order],
        cfg.workers,
    )  # fmt: skip
    run_dirs = {t["name"]: t["run_dir"] for t in sorted(trained, key=_model_rank)}
    train_seconds = time.perf_counter() - start

    labels, correct = correct_on_test(run_dirs)
    accuracy = {name: float(c.mean()) for name, c in correct.items()}
    common = np.flatnonzero(np.logical_and.reduce(list(correct.values())))
    if len(common) < cfg.n_rps:
        raise ConfigError(
            f"only {len(common)} test digits are classified correctly by every model; "
            f"--n-rps {cfg.n_rps} needs more"
        )
    chosen = np.random.default_rng(cfg.toy_seed).permutation(common)[: cfg.n_rps].tolist()
    accuracies = ", ".join(f"{name} {acc:.3f}" for name, acc in accuracy.items())
    log(f"demo: test accuracy {accuracies}; {len(common)} digits right by every model")

    calls = []
    for run_dir in run_dirs.values():
        for lo in range(0, cfg.n_topk, TOPK_SLICE):
            digits = chosen[lo : min(lo + TOPK_SLICE, cfg.n_topk)]
            calls.append((score_job, "topk", run_dir, digits, cfg))
        calls.append((score_job, "rps", run_dir, chosen, cfg))
    score_start = time.perf_counter()
    results = run_jobs(calls, cfg.workers)
    scores = _collect(run_dirs, calls, results)
    score_seconds = time.perf_counter() - score_start

    spec = BootstrapSpec(n_resamples=cfg.n_resamples, seed=cfg.toy_seed)  # labshared.stats
    comparisons: dict[str, dict[str, dict]] = {}
    for name, _, side_b, side_a in COMPARISONS:
        comparisons[name] = {}
        for key, _ in METRICS:
            b = np.mean([scores[m][key] for m in side_b], axis=0)  # (N,) per digit
            a = np.mean([scores[m][key] for m in side_a], axis=0)
            res = paired(a, b, spec=spec)
            comparisons[name][key] = {
                "mean": res.diff.estimate, "low": res.diff.low, "high": res.diff.high,
                "n": res.n, "confidence": spec.confidence, "p_value": res.p_value,
            }  # fmt: skip
    figure = pair_figure(cfg, run_dirs, chosen, scores, comparisons, out / FIGURE)
    worker_cpu = sum(t["cpu_seconds"] for t in trained) + sum(r["cpu_seconds"] for r in results)
    result = {
        "config": asdict(cfg),
        "accuracy": accuracy,
        "n_test": int(len(labels)),
        "n_common": int(len(common)),
        "means": {m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()},
        "comparisons": comparisons,
        # none vs l2cos (seed s) through the shared paired comparison, RPS and top-k digits
        "paired": paired_tables(chosen, cfg, scores, spec),
        "bootstrap": spec.record("digit"),
        "figure": str(figure),
        "timing": {
            "wall_seconds": time.perf_counter() - start,
            "train_wall_seconds": train_seconds,
            "score_wall_seconds": score_seconds,
            "cpu_seconds": time.process_time() - cpu + worker_cpu,
            "train_cpu_seconds": {t["name"]: t["cpu_seconds"] for t in trained},
        },
    }
    atomic_write_json(out / "demo.json", result)
    atomic_write_text(out / "demo_table.md", format_markdown(result) + "\n")
    return result


def paired_tables(chosen: list[int], cfg: DemoConfig, scores: dict, spec) -> dict[str, dict]:
    """`labshared.compare` of none vs l2cos (training seed s) on the RPS digits and on the
    top-k digits: each measure's mean with its interval, the paired difference, p-value."""
    out = {}
    for task, n in (("rps", cfg.n_rps), ("topk", cfg.n_topk)):
        keys = [k for k, _ in METRICS if k.startswith(task)]
        entries = [Entry(m, chosen[:n], {k: scores[m][k] for k in keys}) for m in ("none", "l2cos")]
        out[task] = compare(entries, _headlines(task), spec)
    return out


def _headlines(task: str) -> list[Headline]:
    return [Headline(label, key, digits=3) for key, label in METRICS if key.startswith(task)]


def pair_figure(cfg: DemoConfig, run_dirs: dict[str, str], chosen: list[int], scores: dict,
                comparisons: dict, path: Path) -> Path:  # fmt: skip
    """The figure of none vs l2cos (seed s): the first digits' maps before and after the
    top-k attack under each, and the per-digit paired differences (`figures.save_pair_figure`)."""
    digits = chosen[:FIGURE_DIGITS]
    maps, meta, x = {}, None, None
    for name in ("none", "l2cos"):
        model, meta, dataset, box = load_victim(run_dirs[name], "last", None, torch.device("cpu"))
        x = torch.stack([dataset[i][0] for i in digits])
        y = torch.tensor([dataset[i][1] for i in digits])
        attacked = topk_attack(model, x, y, box, eps=cfg.eps, n_iter=cfg.n_iter)
        clean = heatmap(model, x, y).detach()
        adv = heatmap(model, attacked.x_adv, y).detach()
        maps[name] = (clean, adv, similarity_report(adv, clean)["topk"])
    diffs = []
    for key, label in (("topk_topk", "top-k attack: top-k intersection"), ("rps_pcc", "RPS: PCC")):
        c = comparisons["effect_seed1"][key]
        values = np.asarray(scores["l2cos"][key]) - np.asarray(scores["none"][key])
        diffs.append((label, values, Interval(c["mean"], c["low"], c["high"])))
    title = (f"none vs l2cos on the same MNIST-5k digits (toy seed {cfg.toy_seed}, training "
             f"seed {cfg.seed}, eps {cfg.eps:g}/255)")  # fmt: skip
    return save_pair_figure(path, x, maps, diffs, meta, title=title)


def _model_rank(job: dict) -> int:
    return [m[0] for m in MODELS].index(job["name"])


def _collect(run_dirs: dict[str, str], calls: list[tuple], results: list[dict]) -> dict:
    """{model: {metric: (N,) array}} from the jobs' per-digit lists, slices in order."""
    name_of = {run_dir: name for name, run_dir in run_dirs.items()}
    scores: dict[str, dict[str, list[float]]] = {name: {} for name in run_dirs}
    for call, res in zip(calls, results, strict=True):
        for key, values in res["metrics"].items():
            scores[name_of[call[2]]].setdefault(key, []).extend(values)
    return {m: {k: np.asarray(v) for k, v in s.items()} for m, s in scores.items()}


def gate_passes(result: dict[str, Any], min_accuracy: float = 0.96) -> bool:
    """The effect gate: every model's test accuracy >= min_accuracy, and at each training
    seed the 95 % interval of the paired top-k-attack intersection difference l2cos - none
    lies entirely above 0."""
    accurate = all(a >= min_accuracy for a in result["accuracy"].values())
    comparisons = result["comparisons"]
    return accurate and all(comparisons[c][GATE_METRIC]["low"] > 0 for c in GATE_COMPARISONS)


def _fmt(c: dict) -> str:
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def format_markdown(result: dict[str, Any]) -> str:
    """Settings, accuracies, a table of means and a table of paired differences."""
    cfg, acc, means = result["config"], result["accuracy"], result["means"]
    models = [m[0] for m in MODELS]
    n_of = {"rps": cfg["n_rps"], "topk": cfg["n_topk"]}
    mean_rows = [
        [f"{label} ({n_of[key.split('_')[0]]})", *(f"{means[m][key]:.3f}" for m in models)]
        for key, label in METRICS
    ]
    comparisons = result["comparisons"]
    diff_rows = [
        [label, *(_fmt(comparisons[c][key]) for c, *_ in COMPARISONS)] for key, label in METRICS
    ]
    lines = [
        f"MNIST-5k toy seed {cfg['toy_seed']}, training seeds s = {cfg['seed']} (none, l2cos) "
        f"and s+1 = {cfg['seed'] + 1} (none-2, l2cos-2); {result['n_common']} of "
        f"{result['n_test']} test digits right by all four models; RPS on {cfg['n_rps']} of "
        f"them ({cfg['n_draws']} draws), top-k attack on {cfg['n_topk']} "
        f"({cfg['n_iter']} iterations); eps {cfg['eps']:g}/255; grad maps.",
        "",
        "test accuracy (1,000 digits): " + ", ".join(f"{m} {acc[m]:.3f}" for m in models),
        "",
        render_table(["similarity to the clean map (n digits)", *models], mean_rows, markdown=True),
        "",
        f"Paired differences, mean [95 % percentile-bootstrap interval over digits, "
        f"{cfg['n_resamples']} resamples]:",
        "",
        render_table(["metric", *(c[1] for c in COMPARISONS)], diff_rows, markdown=True),
    ]
    for task, what in (("rps", "RPS"), ("topk", "top-k attack")):
        if "paired" in result:
            lines += [
                "",
                f"none vs l2cos (training seed s), {what}, paired per digit:",
                "",
                format_comparison(result["paired"][task], _headlines(task), markdown=True),
            ]
    if "figure" in result:
        lines += ["", f"figure: {result['figure']}"]
    t = result["timing"]
    lines += [
        "",
        f"{t['wall_seconds']:.0f} s wall ({t['train_wall_seconds']:.0f} s training, "
        f"{t['score_wall_seconds']:.0f} s scoring), {t['cpu_seconds']:.0f} CPU seconds over "
        f"all processes, {cfg['workers']} worker processes.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description="robattr mini-experiment on MNIST-5k (offline).")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {DEMO_ROOT}/seed-<toy seed>)")  # fmt: skip
    parser.add_argument(
        "--toy-seed",
        type=int,
        default=defaults.toy_seed,
        help="data seed: split, digits scored, RPS noise, bootstrap (0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="training seed s of none and l2cos; none-2 and l2cos-2 use s + 1 (1234)",
    )
    parser.add_argument("--n-rps", type=int, default=defaults.n_rps, help="digits for RPS (500)")
    parser.add_argument(
        "--n-topk",
        type=int,
        default=defaults.n_topk,
        help="digits attacked, the first of the RPS ones (300)",
    )
    parser.add_argument(
        "--n-iter", type=int, default=defaults.n_iter, help="top-k attack iterations (100)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="parallel worker processes, one thread each (2)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    cfg = replace(defaults, toy_seed=args.toy_seed, seed=args.seed, n_rps=args.n_rps,
                  n_topk=args.n_topk, n_iter=args.n_iter, workers=args.workers)  # fmt: skip
    result = run_demo(cfg, args.out or demo_dir(cfg.toy_seed))
    typer.echo(format_markdown(result))
    verdict = "pass" if gate_passes(result) else "FAIL"
    typer.echo(f"\ngate (l2cos - none on the top-k attack intersection, 95 % interval above 0 "
               f"at both seeds; accuracy >= 0.96): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
