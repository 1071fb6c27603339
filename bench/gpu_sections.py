"""The sections of bench/gpu_check.py: what each measures (run in a forked process), the
figures derived from it, and the one table they are shown in.

Every section reaches the tools through their own functions or through the benches that
already call them (rtd_train_bench, rtd_loader_bench, robattr_train_step), so the check
measures the code users run, not a copy of it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

SECTIONS = ("rtd_train", "gallery", "retrieval", "robattr", "tldr")
SMOKE_BACKBONE = "tiny-clip-toy"  # labshared's tiny open_clip architecture (random weights)
OFFICIAL_RTD_STEPS = 2000  # the official RTD run: 2,000 steps x 512 triplets
CIRCO_GALLERY = 123_403
#: issue 12's goals on one H100/H200, checked in the table of a full run
GOAL_RTD_MINUTES, GOAL_GALLERY_IMG_S = 5.0, 2000.0

#: modules each section imports; `preload` imports them in the parent before forking
MODULES = {
    "rtd_train": ("rtd_train_bench",),
    "gallery": ("rtd_loader_bench",),
    "retrieval": ("rtd_cli.retrieval",),
    "robattr": ("robattr_train_step",),
    "tldr": ("tldr_cli.projector", "tldr_cli.retrain", "tldr_cli.classifier"),
}

Send = Callable[[dict], None]


def preload(sections: list[str]) -> None:
    """Import what the sections need once, before forking (a failed import is reported by
    its section, which imports again)."""
    import torch  # noqa: F401

    for name in sections:
        for module in MODULES[name]:
            # a failed import is reported by its section, with its traceback
            with contextlib.suppress(Exception):
                importlib.import_module(module)


def cuda_initialised() -> bool:
    """Whether this process has started CUDA (then its forked children cannot use it)."""
    import torch

    return torch.cuda.is_initialized()


def set_threads(n: int) -> None:
    """torch's intra-op threads in this process (0: leave torch's default)."""
    import torch

    if n:
        torch.set_num_threads(n)


def run_job(job: tuple[str, str | None], sizes, device: str, deadline: float, send: Send) -> None:
    """Run one job of gpu_check.JOBS, sending {"kind": "row"|"start"|"skipped"|"error"}."""
    name, phase = job
    if name == "probe":
        send({"kind": "row", "row": probe(device)})
    elif name == "rtd_train":
        rtd_train(sizes, device, deadline, send, phase)
    else:
        {"gallery": gallery, "retrieval": retrieval, "robattr": robattr, "tldr": tldr}[name](
            sizes, device, deadline, send
        )


def probe(spec: str) -> dict:
    """The device `spec` resolves to, its name and the software around it."""
    import torch

    from labshared.device import resolve_device

    device = resolve_device(spec)
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "gpus": torch.cuda.device_count() if cuda else 0,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
    }


# --------------------------------------------------------------------------- helpers
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: str) -> tuple[float, str]:
    """(peak GiB, what it is): CUDA's max allocated, or the process's peak resident set."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"


def _timed(fn, device: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------- sections
def rtd_train(sizes, device: str, deadline: float, send: Send, phase: str | None) -> None:
    """`all` (phase "all") or every other variant of rtd_train_bench.VARIANTS in order;
    a variant is skipped when the previous one's duration would carry it past `deadline`."""
    from rtd_train_bench import VARIANTS, run_variants

    names = [n for n in VARIANTS if (n == "all") == (phase == "all")]
    last = 0.0
    for name in names:
        if name in sizes.rtd_skip:
            send({"kind": "skipped", "case": name, "reason": "not in this run's sizes (--smoke)"})
            continue
        if time.time() + last > deadline:
            send({"kind": "skipped", "case": name, "reason": "time budget"})
            continue
        send({"kind": "start", "case": name})
        t0 = time.time()
        steps, warmup = (
            (sizes.rtd_steps, sizes.rtd_warmup)
            if name == "all"
            else (sizes.ablation_steps, sizes.ablation_warmup)
        )
        try:
            (row,) = run_variants(
                device=device, backbone=sizes.backbone, batch_size=sizes.rtd_batch,
                steps=steps, warmup=warmup, names=[name],
            )  # fmt: skip
        except Exception as exc:  # one variant failing leaves the others to run
            send({"kind": "error", "error": f"{name}: {type(exc).__name__}: {exc}"})
            continue
        last = time.time() - t0
        row = {**row, "case": name, "batch": sizes.rtd_batch, "backbone": sizes.backbone}
        send({"kind": "row", "row": {**row, "wall_s": round(last, 1)}})


def gallery(sizes, device: str, deadline: float, send: Send) -> None:
    """Gallery encoding through the real loader, JPEGs decoded by CPU workers, then by
    torchvision on the device (nvJPEG on CUDA; the same tensor code on a CPU device)."""
    from rtd_loader_bench import gallery_throughput

    for decode in ("cpu", "gpu"):
        if time.time() > deadline:
            send({"kind": "skipped", "case": f"{decode} decode", "reason": "time budget"})
            continue
        send({"kind": "start", "case": f"{decode} decode"})
        row = gallery_throughput(
            device=device, backbone=sizes.backbone, n_images=sizes.gallery_images,
            workers=sizes.gallery_workers, batch_size=sizes.gallery_batch, decode=decode,
        )  # fmt: skip
        send({"kind": "row", "row": {**row, "case": f"{decode} decode", "backbone": sizes.backbone,
                                     "n_images": sizes.gallery_images}})  # fmt: skip


def retrieval(sizes, device: str, deadline: float, send: Send) -> None:
    """`rtd eval`'s ranking core (chunked top-k) at CIRCO size: median of `repeats` calls."""
    import torch
    from rtd_retrieval_bench import unit_rows

    from rtd_cli.retrieval import chunked_topk

    queries = unit_rows(sizes.queries, sizes.dim, device, 0)
    gallery_feats = unit_rows(sizes.gallery, sizes.dim, device, 1)

    def call():
        return chunked_topk(queries, gallery_feats, sizes.top_k, device=torch.device(device))

    call()  # CUDA kernels and cuBLAS handles: not timed
    _reset_peak(device)
    cuda = device.startswith("cuda")
    resident = torch.cuda.memory_allocated(device) / 2**30 if cuda else 0.0
    times = _timed(call, device, sizes.repeats)
    peak, kind = _peak_gib(device)
    kind += ", above the resident features" if cuda else ""
    send({"kind": "row", "row": {
        "case": f"{sizes.queries:,} x {sizes.gallery:,} x {sizes.dim}-d, top-{sizes.top_k}",
        "seconds": statistics.median(times), "seconds_best": min(times),
        "queries_per_s": sizes.queries / statistics.median(times),
        "peak_mem_gib": peak - resident, "peak_mem_kind": kind,
    }})  # fmt: skip


def robattr(sizes, device: str, deadline: float, send: Send) -> None:
    """`robattr train` steps per regulariser (robattr_train_step.measure: build_parts +
    train_step, interleaved, at the CLI's default precision)."""
    from robattr_train_step import measure

    args = argparse.Namespace(
        device=device, precision="auto", batch_size=sizes.robattr_batch,
        steps=sizes.robattr_steps, warmup=sizes.robattr_warmup,
    )  # fmt: skip
    for r in measure(sizes.robattr_model, args):
        send({"kind": "row", "row": {
            "case": f"{r['model']} {r['regularizer']}", "regularizer": r["regularizer"],
            "ms_per_step": r["ms_per_step"], "batch": sizes.robattr_batch,
            "img_per_s": sizes.robattr_batch / (r["ms_per_step"] / 1000),
            "peak_mem_gib": r["peak_mib"] / 1024, "peak_mem_kind": r["memory"],
            "precision": r["precision"],
        }})  # fmt: skip


def tldr(sizes, device: str, deadline: float, send: Send) -> None:
    """The projector solve for each CLIP width, then one retraining epoch."""
    for d_clip in sizes.clip_dims:
        send({"kind": "start", "case": f"projector {d_clip}"})
        send({"kind": "row", "row": tldr_projector(sizes, device, d_clip)})
    send({"kind": "start", "case": "retraining epoch"})
    send({"kind": "row", "row": tldr_epoch(sizes, device)})


def tldr_projector(sizes, device: str, d_clip: int) -> dict:
    """Gap-constrained ridge from `tldr_rows` (CLIP image, classifier feature) pairs: the
    float64 statistics in 16,384-row chunks, the Cholesky solve and the Projector."""
    import torch

    from tldr_cli.projector import Projector, ridge_statistics, solve_gap_ridge_from_stats

    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(sizes.tldr_rows, d_clip, generator=gen, device=device)
    mix = torch.randn(d_clip, sizes.feature_dim, generator=gen, device=device) * 0.05
    y = torch.relu(x @ mix + 0.1)
    gap = torch.randn(d_clip, generator=gen, device=device, dtype=torch.float64)

    def solve():
        chunks = ((x[i : i + 16384], y[i : i + 16384]) for i in range(0, len(x), 16384))
        w, b = solve_gap_ridge_from_stats(ridge_statistics(chunks), gap, 50.0)
        return Projector(w, b), w

    solve()  # cuBLAS / cuSOLVER initialisation: not timed
    _reset_peak(device)
    (seconds,) = _timed(solve, device, 1)
    _, w = solve()
    peak, kind = _peak_gib(device)
    return {
        "case": f"projector {sizes.tldr_rows:,} x {d_clip} -> {sizes.feature_dim}",
        "seconds": seconds, "rows_per_s": sizes.tldr_rows / seconds,
        "constraint": float((gap @ w).abs().max() / w.abs().max()),
        "peak_mem_gib": peak, "peak_mem_kind": kind,
    }  # fmt: skip


def tldr_epoch(sizes, device: str) -> dict:
    """One `train_text_head` epoch over `tldr_rows` balanced text pairs of `tldr_words`
    words x `tldr_templates` templates, then the head's predictions on as many features."""
    import torch

    from labshared.device import setup_runtime
    from tldr_cli.classifier import head_predictions
    from tldr_cli.projector import Projector
    from tldr_cli.retrain import train_text_head
    from tldr_cli.textdata import TextPairs

    runtime = setup_runtime(device, "auto", 0)
    d_clip, n, n_words = sizes.clip_dims[-1], sizes.tldr_rows, sizes.tldr_words
    gen = torch.Generator().manual_seed(0)
    dev_gen = torch.Generator(device=device).manual_seed(0)  # GB-sized tensors made in place
    proj = Projector(torch.randn(d_clip, sizes.feature_dim, generator=gen) * 0.05,
                     torch.zeros(sizes.feature_dim))  # fmt: skip
    word_emb = torch.randn(n_words, sizes.tldr_templates, d_clip, generator=dev_gen,
                           device=device)  # fmt: skip
    i = torch.arange(n)
    # label and spurious attribute alternate, so the 4 groups are equal and the balanced
    # epoch holds (almost) all n pairs
    t_idx = torch.randint(n_words, (n,), generator=gen)
    s_idx = torch.randint(n_words, (n,), generator=gen)
    pairs = TextPairs([f"w{k}" for k in range(n_words)], t_idx, s_idx, i % 2, (i // 2) % 2, 2)
    feats = torch.randn(n, sizes.feature_dim, generator=dev_gen, device=device).relu_()

    def epoch(p):
        return train_text_head(
            p, word_emb, proj, 2, lr=1e-4, weight_decay=1e-4, batch_size=128, epochs=1,
            generator=gen, runtime=runtime,
        )[0]  # fmt: skip

    warm = TextPairs(pairs.words, pairs.t_idx[:512], pairs.s_idx[:512], i[:512] % 2,
                     (i[:512] // 2) % 2, 2)  # fmt: skip
    head_predictions(epoch(warm), feats[:1024])  # kernels and AdamW set-up: not timed
    _reset_peak(device)
    holder = {}
    (seconds,) = _timed(lambda: holder.update(head=epoch(pairs)), device, 1)
    (predict_s,) = _timed(lambda: head_predictions(holder["head"], feats), device, 1)
    peak, kind = _peak_gib(device)
    steps = -(-n // 128)
    return {
        "case": f"retraining epoch {n:,} pairs, {n_words:,} words x {sizes.tldr_templates}",
        "seconds": seconds, "steps": steps, "steps_per_s": steps / seconds,
        "predict_s": predict_s, "predict_rows": n, "precision": runtime.precision.name,
        "peak_mem_gib": peak, "peak_mem_kind": kind,
    }  # fmt: skip


# --------------------------------------------------------------------------- figures
def derive(section: str, row: dict, info: dict) -> dict:
    """Figures that follow from one row and the device: RTD's projected minutes and MFU."""
    if section != "rtd_train":
        return row
    row = dict(row)
    row["minutes_2000_steps"] = OFFICIAL_RTD_STEPS * row["s_per_step"] / 60
    peak = info.get("peak_bf16_flops")
    flop = row.get("flop_per_step")
    row["mfu"] = flop / row["s_per_step"] / peak if peak and flop else None
    return row


def relate(section: str, rows: list[dict]) -> None:
    """Ratios between rows of one section: RTD variants to `all`, robattr to `none`."""
    key, base_case, field = {
        "rtd_train": ("case", "all", "s_per_step"),
        "robattr": ("regularizer", "none", "ms_per_step"),
    }.get(section, (None, None, None))
    base = next((r for r in rows if key and r.get(key) == base_case), None)
    for r in rows:
        if base is not None:
            r["time_vs_" + base_case] = r[field] / base[field]


def _fmt(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


def _cells(section: str, r: dict, full: bool) -> list[str]:
    """time, rate and notes cells of one row."""
    if section == "rtd_train":
        minutes = r["minutes_2000_steps"]
        notes = f"2,000 steps: {minutes:.1f} min"
        if full and r["case"] == "all":
            notes += f" (goal <= {GOAL_RTD_MINUTES:g}: {_goal(minutes <= GOAL_RTD_MINUTES)})"
        notes += f"; MFU {_fmt(r['mfu'] and 100 * r['mfu'], '.0f', ' %')}"
        notes += f"; {_fmt(r.get('time_vs_all'), '.2f', 'x')} all"
        notes += f"; {_fmt(r.get('seq_len'), '.1f')} tokens"
        return [f"{r['s_per_step']:.3f} s/step", f"{r['steps_per_s']:.2f} steps/s", notes]
    if section == "gallery":
        notes = f"{r['workers']} workers, batch {r['batch_size']}; CIRCO gallery "
        notes += f"{CIRCO_GALLERY / r['img_per_s'] / 60:.1f} min"
        if full:
            met = r["img_per_s"] >= GOAL_GALLERY_IMG_S
            notes += f" (goal >= {GOAL_GALLERY_IMG_S:g} img/s: {_goal(met)})"
        return [f"{r['n_images'] / r['img_per_s']:.2f} s", f"{r['img_per_s']:.0f} img/s", notes]
    if section == "retrieval":
        return [f"{r['seconds']:.3f} s", f"{r['queries_per_s']:.0f} queries/s",
                f"best {r['seconds_best']:.3f} s"]  # fmt: skip
    if section == "robattr":
        return [f"{r['ms_per_step']:.1f} ms/step", f"{r['img_per_s']:.0f} img/s",
                f"{_fmt(r.get('time_vs_none'), '.2f', 'x')} none; batch {r['batch']}, "
                f"{r['precision']}"]  # fmt: skip
    if "steps" in r:  # tldr epoch
        return [f"{r['seconds']:.2f} s", f"{r['steps_per_s']:.0f} steps/s",
                f"{r['steps']} steps, {r['precision']}; predict {r['predict_rows']:,} rows "
                f"{r['predict_s']:.2f} s"]  # fmt: skip
    return [f"{r['seconds']:.2f} s", f"{r['rows_per_s']:.0f} rows/s",
            f"|gW|/|W| {r['constraint']:.1e}"]  # fmt: skip


def table(report: dict) -> str:
    """The run's one table (labshared.console.render_table): a row per measurement,
    then a row per error or skipped part."""
    from labshared.console import render_table

    full = not report["smoke"]
    cells = []
    for section, entry in report["sections"].items():
        for r in entry["rows"]:
            peak = f"{r['peak_mem_gib']:.2f}" if r.get("peak_mem_gib") is not None else "n/a"
            try:
                time_cell, rate, notes = _cells(section, r, full)
            except (KeyError, TypeError, ZeroDivisionError) as exc:  # the JSON has it all
                time_cell, rate, notes = "", "", f"unformatted row ({exc!r}): see the JSON"
            cells.append([section, r["case"], time_cell, rate, peak, notes])
        cells += [[section, "ERROR", "", "", "", e] for e in entry["errors"]]
        cells += [[section, "skipped", "", "", "", s] for s in entry["skipped"]]
    peak = report.get("peak_bf16_flops")
    title = (
        f"gpu_check{' --smoke' if report['smoke'] else ''}: {report['device_name']} "
        f"({report['device']}, bf16 peak {_fmt(peak and peak / 1e12, '.0f', ' TFLOP/s')}), "
        f"torch {report['torch']}, {report['elapsed_s']:.0f} s of {report['budget_s']:.0f} s"
    )
    columns = ["section", "case", "time", "rate", "peak GiB", "notes"]
    return render_table(columns, cells, title=title, align="llrrrl")
