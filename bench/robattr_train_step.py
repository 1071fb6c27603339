"""Cost of one `robattr train` step per regulariser: time and peak memory, as ratios to `none`.

The paper argues that local gradient alignment (l2cos: two first-order input gradients and
one double-backprop pass) is cheaper than the Hessian baseline (a third-order backward).
This measures the real training step (`robattr_cli.train.train_step`, with clipping and the
optimiser update) on random CIFAR-shaped batches.

    python bench/robattr_train_step.py                      # CPU (or GPU when present)
    python bench/robattr_train_step.py --device cuda --steps 20

Memory: on CUDA, the peak of `torch.cuda.max_memory_allocated` during a step minus what
was allocated before it (weights, gradients and optimiser state excluded). On CPU there is no allocator counter, so the figure is the autograd graph's size instead: the
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

MODELS = ("lenet", "resnet18-cifar")
REGULARIZERS = ("none", "l2cos", "hessian")


def measure(model_name: str, args: argparse.Namespace) -> list[dict]:
    """Time `args.steps` training steps per regulariser after `args.warmup` untimed ones.

    The regularisers take turns step by step (none, l2cos, hessian, none, ...), so a
    change in the machine's load during the run affects every configuration alike.
    """
    from dataclasses import replace

    import torch

    from labshared.data.image_classification import get_dataset_info
    from labshared.device import setup_runtime
    from robattr_cli.config import PRESETS
    from robattr_cli.model import build_model, use_elementary_batchnorm
    from robattr_cli.regularizers import RegSpec
    from robattr_cli.train import build_optimizer, train_step

    runtime = setup_runtime(args.device, args.precision, seed=0)
    cuda = runtime.device.type == "cuda"
    info = get_dataset_info("cifar10")
    preset = "cifar10-lenet" if model_name == "lenet" else "cifar10-resnet18"
    x = torch.randn(args.batch_size, 3, 32, 32, device=runtime.device)
    y = torch.randint(0, 10, (args.batch_size,), device=runtime.device)

    def make_step(regularizer: str):
        cfg = replace(PRESETS[preset], regularizer=regularizer, batch_size=args.batch_size)
        model = build_model(model_name, 10, "softplus", 3.0)
        if regularizer == "hessian":  # as `robattr train` does (third-order backward through BN)
            use_elementary_batchnorm(model)
        model = model.to(runtime.device).train()
        optimizer = build_optimizer(cfg, model)
        scaler = torch.amp.GradScaler(
            runtime.device.type, enabled=runtime.precision.use_grad_scaler
        )
        spec = RegSpec(
            eps=cfg.eps,
            std=info.std,
            lambda_l2=cfg.lambda_l2,
            lambda_cos=cfg.lambda_cos,
            lambda_hessian=cfg.lambda_hessian,
        )
        gen = torch.Generator(device=runtime.device).manual_seed(0)

        def step() -> None:
            train_step(model, model, x.clone(), y, cfg, spec, runtime, optimizer, scaler, gen)
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
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20


def table(rows: list[dict]) -> str:
    """Markdown table with ratios to the `none` row of the same model."""
    mem_label = (
        "step peak" if rows[0]["memory"] == "step_peak_above_resident" else "saved-for-backward"
    )
    lines = [
        f"device: {rows[0]['device']} ({rows[0]['precision']}), batch {ARGS.batch_size}, "
        f"median of {ARGS.steps} interleaved steps after {ARGS.warmup} warm-up",
        "",
        f"| model | regularizer | ms / step | time vs none | {mem_label} MiB | memory vs none |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = {r["model"]: r for r in rows if r["regularizer"] == "none"}
    for r in rows:
        b = base[r["model"]]
        mem_ratio = r["peak_mib"] / b["peak_mib"] if b["peak_mib"] > 0 else float("nan")
        lines.append(
            f"| {r['model']} | {r['regularizer']} | {r['ms_per_step']:.1f} | "
            f"{r['ms_per_step'] / b['ms_per_step']:.2f}x | {r['peak_mib']:.0f} | {mem_ratio:.2f}x |"
        )
    return "\n".join(lines)


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


if __name__ == "__main__":
    ARGS = parse_args()
    rows = []
    for name in ARGS.models.split(","):
        rows.extend(measure(name, ARGS))
        print(f"  measured {name}", file=sys.stderr)
    print(table(rows))
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(rows, f, indent=2)
