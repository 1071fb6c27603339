"""Cost of TLDR's two compute steps at CelebA scale, on synthetic features.

- `projector`: the closed-form gap-constrained ridge (lambda 50, float64) from 162,770
  CLIP image embeddings (512-d) to classifier features (2048-d): accumulate X^T X and X^T Y
  in row chunks, solve, build the Linear + ReLU projector.
- `epoch`: one TLDR retraining epoch over 162,770 text samples (512-d CLIP vectors ->
  frozen projector -> fresh Linear(2048, 2)), AdamW, batch 128, then predicting the
  162,770 x 2048 classifier features with the new head.

Each step runs in its own process so its peak resident memory (ru_maxrss) is its own;
torch and the tool are imported inside the step functions for the same reason (the parent
process only starts the steps and prints the table).
Usage: python bench/tldr_bench.py [--n 162770] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

N_CELEBA = 162_770
D_CLIP, D_PHI = 512, 2048


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _data(n: int, device: str):
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, D_CLIP, generator=gen)
    y = torch.relu(x @ torch.randn(D_CLIP, D_PHI, generator=gen) * 0.05 + 0.1)
    gap = torch.randn(D_CLIP, generator=gen, dtype=torch.float64)
    return x.to(device), y.to(device), gap.to(device)


def step_projector(n: int, device: str) -> dict:
    import torch

    from tldr_cli.projector import Projector, ridge_statistics, solve_gap_ridge_from_stats

    x, y, gap = _data(n, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    chunks = ((x[i : i + 16384], y[i : i + 16384]) for i in range(0, n, 16384))
    w, b = solve_gap_ridge_from_stats(ridge_statistics(chunks), gap, 50.0)
    Projector(w, b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {
        "step": "projector solve",
        "seconds": round(seconds, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),
        "constraint_|gW|/|W|": float((gap @ w).abs().max() / w.abs().max()),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def step_epoch(n: int, device: str) -> dict:
    import torch

    from labshared.device import setup_runtime
    from tldr_cli.classifier import head_predictions
    from tldr_cli.projector import Projector
    from tldr_cli.retrain import train_text_head
    from tldr_cli.textdata import TextPairs

    runtime = setup_runtime(device, "fp32", 0)
    torch.optim.AdamW(
        torch.nn.Linear(1, 1).parameters()
    )  # one-time import of torch._dynamo, not timed
    gen = torch.Generator().manual_seed(0)
    proj = Projector(torch.randn(D_CLIP, D_PHI, generator=gen) * 0.05, torch.zeros(D_PHI))
    # n samples = n "words" under one template, paired with themselves: exactly n inputs
    word_emb = torch.randn(n, 1, D_CLIP, generator=gen)
    label = torch.arange(n) % 2
    spurious = (torch.arange(n) // 2) % 2
    pairs = TextPairs(
        [str(i) for i in range(n)], torch.arange(n), torch.arange(n), label, spurious, 2
    )
    feats = torch.relu(torch.randn(n, D_PHI, generator=gen))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    head, losses = train_text_head(
        pairs,
        word_emb,
        proj,
        2,
        lr=1e-4,
        weight_decay=1e-4,
        batch_size=128,
        epochs=1,
        generator=gen,
        runtime=runtime,
    )
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    head_predictions(head, feats)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out = {
        "step": "retraining epoch",
        "seconds": round(train_s, 2),
        "cpu_seconds": round(train_cpu, 2),
        "steps": -(-n // 128),
        "predict_seconds": round(time.perf_counter() - t0, 2),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N_CELEBA, help="rows (CelebA train: 162,770)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--step", choices=["projector", "epoch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        out = (step_projector if args.step == "projector" else step_epoch)(args.n, args.device)
        out["peak_rss_mib"] = round(_peak_mib())
        out["threads"] = torch.get_num_threads()
        print(json.dumps(out))
        return 0
    rows = []
    for step in ("projector", "epoch"):
        cmd = [
            sys.executable,
            __file__,
            "--step",
            step,
            "--n",
            str(args.n),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    from labshared.console import render_table

    table = render_table(
        ["step", "wall s", "peak RSS MiB", "notes (cpu_seconds: process CPU time)"],
        [
            [
                r["step"],
                r["seconds"],
                r["peak_rss_mib"],
                json.dumps(
                    {k: v for k, v in r.items() if k not in ("step", "seconds", "peak_rss_mib")}
                ),
            ]
            for r in rows
        ],
        title=f"TLDR bench: n={args.n}, CLIP {D_CLIP}-d -> classifier {D_PHI}-d, "
        f"device {args.device}",
        align="lrrl",
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
