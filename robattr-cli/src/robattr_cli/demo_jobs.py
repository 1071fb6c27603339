"""The jobs of the robattr demo (`demo.py`), each run in its own worker process: train one
model, or score one model on some digits (RPS or the top-k attack). Each job's log lines
name its model, so the lines of models trained at once stay apart in one log."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from labshared.console import log
from labshared.launch import start_run
from robattr_cli import __version__
from robattr_cli.attributions import heatmap
from robattr_cli.config import resolve_config
from robattr_cli.manipulation import rps_similarity, topk_attack
from robattr_cli.metrics import similarity_report
from robattr_cli.train import run
from robattr_cli.victim import load_victim

# `demo.DemoConfig` (demo.py imports these jobs, so this module does not import it)
DemoConfig = Any


def _init_worker() -> None:
    torch.set_num_threads(1)


def train_job(name: str, regularizer: str, seed: int, cfg: DemoConfig, out: str) -> dict:
    """Train one model of the demo into `out`; returns its summary and CPU seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    overrides = {"regularizer": regularizer, "toy_seed": cfg.toy_seed}
    overrides |= {"epochs": cfg.epochs, "limit_train": cfg.limit_train}
    train_cfg = resolve_config("mnist-toy", None, None, overrides)
    started = start_run(
        "robattr", "train", train_cfg, version=__version__, preset=train_cfg.preset,
        output_dir=out, overwrite=True, device="cpu", precision="fp32", seed=seed,
    )  # fmt: skip
    summary = run(train_cfg, started.runtime, started.dir, label=f"demo {name} (seed {seed})")
    wall = time.perf_counter() - start
    log(f"demo: trained {name} in {wall:.0f} s (val acc {summary['final_val_acc']:.4f})")
    return {"name": name, "run_dir": str(started.dir), "seconds": wall,
            "cpu_seconds": time.process_time() - cpu}  # fmt: skip


def score_job(task: str, run_dir: str, indices: list[int], cfg: DemoConfig) -> dict:
    """Per-digit similarities of one model on test digits `indices`.

    task: "rps" (metrics averaged over `n_draws` noise draws; the noise generator is
    seeded from the toy seed alone, so every model sees the same draws) or "topk" (the
    Ghorbani attack on its real model; label-flipping iterates are rejected).
    Returns {"task", "metrics": {key: list per digit}, "cpu_seconds"}.
    """
    start = time.process_time()
    model, meta, dataset, box = load_victim(run_dir, "last", None, torch.device("cpu"))
    x = torch.stack([dataset[i][0] for i in indices])
    y = torch.tensor([dataset[i][1] for i in indices])
    if task == "rps":
        noise = torch.Generator().manual_seed(cfg.toy_seed)
        rep = rps_similarity(model, x, y, box, eps=cfg.eps, n_draws=cfg.n_draws,
                             noise_generator=noise)  # fmt: skip
        metrics = {"rps_pcc": rep["pcc"], "rps_topk": rep["topk"]}
    else:
        result = topk_attack(model, x, y, box, eps=cfg.eps, n_iter=cfg.n_iter)
        h_clean = heatmap(model, x, y).detach()
        h_adv = heatmap(model, result.x_adv, y).detach()
        rep = similarity_report(h_adv, h_clean)
        metrics = {"topk_topk": rep["topk"], "topk_pcc": rep["pcc"],
                   "topk_spearman": rep["spearman"]}  # fmt: skip
    return {
        "task": task,
        "metrics": {k: v.double().tolist() for k, v in metrics.items()},
        "cpu_seconds": time.process_time() - start,
    }


def run_jobs(calls: list[tuple], workers: int) -> list[Any]:
    """Run `(function, *args)` calls, `workers` processes at a time (in this process when
    workers == 1); results in the order of `calls`."""
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [fn(*args) for fn, *args in calls]
        finally:
            torch.set_num_threads(threads)
    context = multiprocessing.get_context("spawn")  # fork after torch threads can hang
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(fn, *args) for fn, *args in calls]
        return [f.result() for f in futures]
