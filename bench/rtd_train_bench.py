"""Throughput and peak memory of one `rtd train` step on a ViT-B-32-sized text tower.

Random weights (open_clip's ViT-B-32 config, no download) and a random LinCIR Phi; the
step is the real one (`rtd_cli.rtd_step.build_parts` + `step_loss` + AdamW), on toy-grammar
triplets. CPU: batch 16 (2B = 32 queries); GPU: batch 128 (the paper's per-GPU batch).

    python bench/rtd_train_bench.py [--device cpu|cuda] [--batch-size N] [--steps N]

Prints one JSON line: triplets/s, seconds/step and peak memory (CUDA: max allocated;
CPU: the process's peak resident set, which includes the Python runtime and both towers).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from labshared.config import resolve
from labshared.data.text_triplets import load_text_triplets
from labshared.device import setup_runtime
from rtd_cli import config as C
from rtd_cli import model as M
from rtd_cli.loop import BatchSampler
from rtd_cli.rtd_step import build_parts, step_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default 16 on CPU, 128 on GPU"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 5 CPU, 20 GPU)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--gather-negatives", action="store_true")
    args = parser.parse_args()

    runtime = setup_runtime(args.device, "auto", seed=0)
    gpu = runtime.device.type == "cuda"
    batch = args.batch_size or (128 if gpu else 16)
    steps = args.steps or (20 if gpu else 3)
    with tempfile.TemporaryDirectory() as tmp:
        phi_path = Path(tmp) / "phi.pt"
        M.save_projection(phi_path, M.build_projection("lincir", 512, 512), "lincir")
        overrides = {"pretrained": "random", "phi": str(phi_path), "triplets": "toy:4096",
                     "batch_size": batch, "gather_negatives": args.gather_negatives}  # fmt: skip
        cfg = resolve(C.TRAIN_PRESETS, "rtd-vit-b32", overrides, validate=C.validate_train)
        parts, clip_model = build_parts(cfg, runtime)
        del clip_model.visual  # the image tower plays no part in training
        data = load_text_triplets(cfg.triplets)
        sampler = BatchSampler(len(data), batch, cfg.seed)
        params = [p for p in parts.trainable.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(0)

        def one(step: int) -> None:
            rows = [data.triplets[i] for i in sampler.indices(step).tolist()]
            loss = step_loss(parts, rows, cfg, runtime, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for s in range(args.warmup):
            one(s)
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for s in range(steps):
            one(args.warmup + s)
        if gpu:
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
    peak = (
        torch.cuda.max_memory_allocated()
        if gpu
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    result = {
        "bench": "rtd train step",
        "tower": "ViT-B-32 text (random weights)",
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "threads": torch.get_num_threads(),
        "precision_frozen": runtime.precision.name,
        "batch_triplets": batch,
        "timed_steps": steps,
        "seconds_per_step": round(dt, 4),
        "triplets_per_second": round(batch / dt, 1),
        "peak_memory_gib": round(peak / 2**30, 2),
        "peak_memory_kind": "cuda max_memory_allocated" if gpu else "process peak RSS",
        "trained_parameters_m": round(sum(p.numel() for p in params) / 1e6, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
