"""One-shot device check: every GPU hot path of the three tools, timed in one short run.

What one run measures (issue 12), with random weights and synthetic data made on the fly
(no network, no weights, nothing beyond `make install`):

- `rtd_train`: an `rtd train` step of ViT-L/14 at batch 512 (bench/rtd_train_bench.py):
  steps/s, projected minutes for the official 2,000 steps, peak memory and MFU (model FLOPs
  per step / seconds per step / the GPU's peak dense bf16 FLOP/s), then each optimisation
  switched off in turn and the opt-in extras, a few steps each;
- `gallery`: ViT-L/14 gallery encoding through `rtd eval`'s loader, JPEGs decoded on the
  CPU (DataLoader workers) and on the GPU (bench/rtd_loader_bench.py);
- `retrieval`: `rtd_cli.retrieval.chunked_topk`, 1,000 queries x 123,403 gallery x 768-d,
  top-50 (CIRCO's gallery at ViT-L/14 width): time and peak extra memory;
- `robattr`: one `robattr train` step of the CIFAR ResNet-18 at batch 128 with no / l2cos /
  hessian regulariser (bench/robattr_train_step.py: `build_parts` + `train_step`);
- `tldr`: the gap-constrained projector solve (`tldr_cli.projector`) from CelebA's 162,770
  training rows (CLIP 768-d and 512-d -> 2048-d classifier features), and one TLDR
  last-layer retraining epoch (`tldr_cli.retrain.train_text_head`: 162,770 text pairs of
  10,000 words x 80 templates, 2 classes) plus the new head's predictions on 162,770 x
  2048 features.

Each section runs in its own process, forked from this one before anything touches CUDA:
a failing (or crashing) section reports its error in the table and the rest still run,
and each section's peak GPU memory is its own. Timings synchronise the GPU and follow
untimed warm-up steps. A global time budget (`--budget-s`, 7.5 minutes) stops the run:
RTD variants whose turn comes after it (by the previous variant's duration) are skipped,
and a section still running at the deadline is stopped; both are said in the table.

    python bench/gpu_check.py                   # one H100/H200: under 8 minutes (make bench-gpu)
    python bench/gpu_check.py --smoke           # the same code on the CPU, tiny sizes, < 1 min
    python bench/gpu_check.py --sections retrieval,tldr --budget-s 120

Prints one table, then one JSON object (also written to `--out`). Exit status 1 when a
section failed.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

# CUDA cannot be used in a process forked after the parent initialised it. torch's default
# `cuda.is_available()` initialises the driver; the NVML-based check does not, so an
# imported module asking is harmless. Set before torch is imported (by gpu_sections).
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import gpu_sections as S  # noqa: E402

#: Peak dense (no sparsity) bf16 tensor-core FLOP/s by device-name substring, from NVIDIA's
#: datasheets. The first match wins, so the more specific names come first. Unknown
#: devices get no MFU ("n/a") rather than a guessed one.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5, named "NVIDIA H100 80GB HBM3"
    ("H200 NVL", 835e12),
    ("H200", 989e12),  # SXM
    ("A100", 312e12),  # SXM4 and PCIe alike
)


PROBE_TIMEOUT_S = 120  # resolving the device and reading its name (CUDA start-up included)


@dataclass(frozen=True)
class Sizes:
    """The problem sizes of one run: `FULL` (the real ones) or `SMOKE` (a CPU check)."""

    backbone: str  # open_clip name of the RTD tower (random weights)
    rtd_batch: int  # triplets per step
    rtd_steps: int  # timed steps of the "all" variant
    rtd_warmup: int
    ablation_steps: int  # timed steps of every other variant
    ablation_warmup: int
    gallery_images: int
    gallery_batch: int
    gallery_workers: int
    queries: int
    gallery: int
    dim: int
    top_k: int
    repeats: int  # timed retrieval calls
    robattr_model: str
    robattr_batch: int
    robattr_steps: int
    robattr_warmup: int
    tldr_rows: int  # CelebA training rows (projector fit) = text pairs of one epoch
    tldr_words: int
    tldr_templates: int
    clip_dims: tuple[int, ...]
    feature_dim: int  # the classifier's penultimate width (ResNet-50: 2048)
    rtd_skip: tuple[str, ...] = ()  # RTD variants left out of this size of run
    threads: int = 0  # torch threads per section (0: torch's default, all cores)


FULL = Sizes(
    backbone="ViT-L-14", rtd_batch=512, rtd_steps=10, rtd_warmup=3, ablation_steps=4,
    ablation_warmup=2, gallery_images=8192, gallery_batch=256,
    gallery_workers=min(16, os.cpu_count() or 1), queries=1000, gallery=123_403, dim=768,
    top_k=50, repeats=3, robattr_model="resnet18-cifar", robattr_batch=128, robattr_steps=10,
    robattr_warmup=3, tldr_rows=162_770, tldr_words=10_000, tldr_templates=80,
    clip_dims=(768, 512), feature_dim=2048,
)  # fmt: skip
SMOKE = Sizes(
    backbone=S.SMOKE_BACKBONE, rtd_batch=4, rtd_steps=1, rtd_warmup=1, ablation_steps=1,
    ablation_warmup=0, gallery_images=8, gallery_batch=4, gallery_workers=1, queries=50,
    gallery=3000, dim=32, top_k=10, repeats=2, robattr_model="resnet18-cifar",
    robattr_batch=2, robattr_steps=1, robattr_warmup=0, tldr_rows=2000, tldr_words=200,
    tldr_templates=4, clip_dims=(32,), feature_dim=64,
    # torch.compile's CPU code generation alone takes longer than the rest of the smoke
    # run; tests/rtd/test_hot_path.py checks the compiled tower on the CPU instead
    rtd_skip=("+compile",),
    # one thread: tiny tensors gain nothing from two, and under `make test -n 2` a second
    # thread only spins against the other test worker
    threads=1,
)  # fmt: skip

#: Jobs in the order they run. RTD's "all" variant comes first (the run's main figure),
#: its ablations last, so the budget cuts ablations before it cuts any other section.
JOBS = (
    ("rtd_train", "all"),
    ("gallery", None),
    ("retrieval", None),
    ("robattr", None),
    ("tldr", None),
    ("rtd_train", "ablations"),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a device by its name, None when not in the table."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


# --------------------------------------------------------------------------- processes
def _child(job, sizes: Sizes, device: str, deadline: float, conn) -> None:
    """Run one job in a forked process, sending each result row as soon as it exists."""
    os.dup2(2, 1)  # stdout is the parent's table and JSON; anything printed here is a log
    sys.stdout = sys.stderr
    try:
        S.set_threads(sizes.threads)
        S.run_job(job, sizes, device, deadline, lambda msg: conn.send(msg))
    except BaseException as exc:  # reported, never raised: the other sections still run
        traceback.print_exc()
        conn.send({"kind": "error", "error": f"{type(exc).__name__}: {exc}"})
    conn.close()


def run_forked(job, sizes: Sizes, device: str, deadline: float) -> list[dict]:
    """Messages of `job` run in a fresh forked process, stopped at `deadline` if need be.

    The parent never initialises CUDA, so each child starts its own CUDA context."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(job, sizes, device, deadline, send))
    proc.start()
    send.close()
    messages: list[dict] = []
    stopped = False
    while not stopped:
        remaining = deadline - time.time()
        if remaining <= 0:  # the budget, not a failure: listed as skipped
            while recv.poll(0):  # what was sent before the deadline still counts
                try:
                    messages.append(recv.recv())
                except EOFError:
                    break
            proc.kill()
            running = [m["case"] for m in messages if m["kind"] == "start"]
            case = running[-1] if running else job[1] or job[0]
            messages.append(
                {"kind": "skipped", "case": case, "reason": "stopped at the time budget"}
            )
            stopped = True
        elif recv.poll(min(remaining, 1.0)):
            try:
                messages.append(recv.recv())
            except EOFError:  # every sender closed: the child has finished
                break
    proc.join()
    failed = proc.exitcode not in (0, None) and not stopped
    if failed and not any(m["kind"] == "error" for m in messages):
        messages.append({"kind": "error", "error": f"process died (exit code {proc.exitcode})"})
    return messages


# --------------------------------------------------------------------------- the run
def run_all(args: argparse.Namespace, sizes: Sizes, started: float) -> dict:
    """Probe the device, then run every selected job; returns the report (JSON-ready)."""
    deadline = started + args.budget_s
    # the probe is outside the budget: without it nothing can be reported at all
    probe = run_forked(("probe", None), sizes, args.device, time.time() + PROBE_TIMEOUT_S)
    info = next((m["row"] for m in probe if m["kind"] == "row"), None)
    if info is None:
        raise SystemExit(f"error: device probe failed: {probe}")
    if not args.smoke and args.device == "auto" and info["device"] == "cpu":
        raise SystemExit(
            "error: no CUDA device: the full check is sized for one H100/H200; use --smoke "
            "for the CPU check (--device cpu runs the full sizes on the CPU anyway)"
        )
    info["peak_bf16_flops"] = peak_bf16_flops(info["device_name"])
    sections: dict[str, dict] = {}
    for name, phase in JOBS:
        if name not in args.sections:
            continue
        entry = sections.setdefault(name, {"rows": [], "errors": [], "skipped": [], "seconds": 0})
        if time.time() >= deadline:
            entry["skipped"].append(f"{phase or name}: time budget spent")
            continue
        t0 = time.time()
        for msg in run_forked((name, phase), sizes, info["device"], deadline):
            if msg["kind"] == "row":
                entry["rows"].append(S.derive(name, msg["row"], info))
            elif msg["kind"] == "error":
                entry["errors"].append(msg["error"])
            elif msg["kind"] == "skipped":
                entry["skipped"].append(f"{msg['case']}: {msg['reason']}")
        entry["seconds"] = round(entry["seconds"] + time.time() - t0, 1)
        print(f"[gpu_check] {name} {phase or ''}: {time.time() - t0:.1f} s", file=sys.stderr)
    for name, entry in sections.items():
        S.relate(name, entry["rows"])
        entry["status"] = "error" if entry["errors"] else "skipped" if not entry["rows"] else "ok"
    return {
        "check": "gpu_check",
        "smoke": args.smoke,
        **info,
        "sizes": asdict(sizes),
        "budget_s": args.budget_s,
        "elapsed_s": round(time.time() - started, 1),
        "sections": sections,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sections: " + ", ".join(S.SECTIONS),
    )  # fmt: skip
    parser.add_argument(
        "--device", default=None,
        help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto; cpu with --smoke)",
    )  # fmt: skip
    parser.add_argument(
        "--sections", default=",".join(S.SECTIONS),
        help="comma-separated subset of: " + ", ".join(S.SECTIONS) + " (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--budget-s", type=float, default=None,
        help="stop after this many seconds of wall time, skipping what is left "
        "(default 450 = 7.5 min; 300 with --smoke)",
    )  # fmt: skip
    parser.add_argument(
        "--smoke", action="store_true",
        help="the same code paths with tiny sizes (tiny tower, a few images, small "
        "retrieval, batch 2 ResNet, small TLDR sizes): seconds on a CPU",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("runs/gpu_check.json"),
        help="where the JSON report is written (default runs/gpu_check.json)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "auto")
    args.budget_s = args.budget_s if args.budget_s is not None else (300 if args.smoke else 450)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in S.SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; known: {', '.join(S.SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = parse_args(argv)
    S.preload(args.sections)  # imported once here, so each forked section starts at once
    if S.cuda_initialised():
        raise SystemExit("error: CUDA was initialised before forking the sections (a bug)")
    report = run_all(args, SMOKE if args.smoke else FULL, started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = _finite(report)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(S.table(report))
    print(json.dumps(report))
    return 1 if any(e["status"] == "error" for e in report["sections"].values()) else 0


def _finite(value):
    """The report with NaN / infinity as None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    raise SystemExit(main())
