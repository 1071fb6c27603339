"""Cost of one `robattr train` step per regulariser: time and peak memory, as ratios to `none`.

The paper argues that local gradient alignment (l2cos: two first-order input gradients and
one double-backprop pass) is cheaper than the Hessian baseline (a third-order backward).
This measures the real training step (`robattr_cli.train.train_step`, with clipping and the
optimiser update) on random CIFAR-shaped batches, with the model, optimiser, grad scaler and
regulariser spec built by `robattr_cli.train.build_parts` from the paper preset, as
`robattr train` builds them.

    python bench/robattr_train_step.py                      # CPU (or GPU when present)
    python bench/robattr_train_step.py --device cuda --steps 20

Memory: on CUDA, the peak of `torch.cuda.max_memory_allocated` during a step minus what
was allocated before it (weights, gradients and optimiser state excluded). On CPU there is
no allocator counter, so the figure is the autograd graph's size instead: the
bytes of every distinct tensor storage saved for backward during one step (the clean
graph, the noisy graph and the double-backprop graph all live until `loss.backward()`), a
deterministic proxy for the activation part of the peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch

from labshared.config import unknown_name
from labshared.console import render_table
from labshared.device import setup_runtime
from robattr_cli.config import PRESETS
from robattr_cli.train import build_parts, train_step

#: model -> the paper preset it is trained with (CIFAR-10)
MODELS = {"lenet": "cifar10-lenet", "resnet18-cifar": "cifar10-resnet18"}
REGULARIZERS = ("none", "l2cos", "hessian")


def measure(model_name: str, args: argparse.Namespace) -> list[dict]:
    """Time `args.steps` training steps per regulariser after `args.warmup` untimed ones.

    The regularisers take turns step by step (none, l2cos, hessian, none, ...), so a
    change in the machine's load during the run affects every configuration alike.
    """
    runtime = setup_runtime(args.device, args.precision, seed=0)
    cuda = runtime.device.type == "cuda"
    x = torch.randn(args.batch_size, 3, 32, 32, device=runtime.device)
    y = torch.randint(0, 10, (args.batch_size,), device=runtime.device)

    def make_step(regularizer: str):
        cfg = replace(
            PRESETS[MODELS[model_name]], regularizer=regularizer, batch_size=args.batch_size
        )
        parts = build_parts(cfg, runtime)
        parts.model.train()
        gen = torch.Generator(device=runtime.device).manual_seed(0)

        def step() -> None:
            train_step(parts, x.clone(), y, cfg, runtime, gen)
            if cuda:
                torch.cuda.synchronize()

        return step

    steps = {reg: make_step(reg) for reg in REGULARIZERS}
    times: dict[str, list[float]] = {reg: [] for reg in REGULARIZERS}
    memory: dict[str, float] = {reg: 0.0 for reg in REGULARIZERS}
    for reg, step in steps.items():
        for _ in range(args.warmup):
            step()
        if not cuda:
            memory[reg] = saved_for_backward_mib(step)
    for _ in range(args.steps):
        for reg, step in steps.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                resident = torch.cuda.memory_allocated()
            start = time.perf_counter()
            step()
            times[reg].append(time.perf_counter() - start)
            if cuda:  # the step's transient peak above the resident weights and states
                extra = (torch.cuda.max_memory_allocated() - resident) / 2**20
                memory[reg] = max(memory[reg], extra)
    return [
        {
            "model": model_name,
            "regularizer": reg,
            "device": str(runtime.device),
            "precision": runtime.precision.name,
            "ms_per_step": 1000 * statistics.median(times[reg]),
            "peak_mib": memory[reg],
            "memory": "step_peak_above_resident" if cuda else "saved_for_backward",
        }
        for reg in REGULARIZERS
    ]


def saved_for_backward_mib(fn) -> float:
    """MiB of distinct storages autograd saves for backward while `fn` runs."""
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20


def table(rows: list[dict], args: argparse.Namespace) -> str:
    """Markdown table with ratios to the `none` row of the same model."""
    mem_label = (
        "step peak" if rows[0]["memory"] == "step_peak_above_resident" else "saved-for-backward"
    )
    base = {r["model"]: r for r in rows if r["regularizer"] == "none"}
    cells = []
    for r in rows:
        b = base[r["model"]]
        mem_ratio = r["peak_mib"] / b["peak_mib"] if b["peak_mib"] > 0 else float("nan")
        cells.append([
            r["model"], r["regularizer"], f"{r['ms_per_step']:.1f}",
            f"{r['ms_per_step'] / b['ms_per_step']:.2f}x", f"{r['peak_mib']:.0f}",
            f"{mem_ratio:.2f}x",
        ])  # fmt: skip
    columns = ["model", "regularizer", "ms / step", "time vs none", f"{mem_label} MiB"]
    columns.append("memory vs none")
    heading = (
        f"device: {rows[0]['device']} ({rows[0]['precision']}), batch {args.batch_size}, "
        f"median of {args.steps} interleaved steps after {args.warmup} warm-up"
    )
    return heading + "\n\n" + render_table(columns, cells, markdown=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or fp16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"error: {unknown_name('--models', name, MODELS)}")
        rows.extend(measure(name, args))
        print(f"  measured {name}", file=sys.stderr)
    print(table(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
