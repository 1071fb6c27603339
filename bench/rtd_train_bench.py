"""Each optimisation of the `rtd train` step, switched off in turn, timed in one process.

The step is the real one (`rtd_cli.rtd_step`: `build_parts`, `StepSource`, `step_loss`,
`rtd_cli.train.make_optimizer`), with random weights (any open_clip config by name, no
download; `tiny-clip-toy` is labshared's small one), a random LinCIR Phi and toy-grammar
triplets. Variants (`VARIANTS`, in order): `all` (every optimisation on), one per
optimisation switched off, then the opt-in extras:

    all                   token ids of the set cached, batch cut to its longest sequence,
                          frozen anchors cached, fused AdamW, autocast (bf16 on GPUs)
    no token cache        the batch tokenised in the step (Python BPE, 4B texts)
    no sequence cut       every sequence padded to the 77-token context
    no anchor cache       the frozen tower encodes T_t and T_r in every step (no_grad)
    no fused AdamW        torch's per-tensor AdamW loop
    fp32 (no autocast)    both towers in fp32 (on the CPU autocast is off in every variant:
                          labshared refuses bf16 there, so this one equals `all`)
    +compile              torch.compile of the trainable tower
    +grad checkpointing   open_clip's activation checkpointing in the trainable tower

    python bench/rtd_train_bench.py [--device auto] [--backbone ViT-B-32] [--batch-size 32]
                                    [--steps 5] [--warmup 2] [--variants "all,no token cache"]
                                    [--rounds 1]

Prints one table (time per step relative to `all`) and one JSON line per variant.
`flop_per_step` counts the model FLOPs a step executes (matmuls and attention of the frozen
forward, when anchors are not cached, and of the trainable forward + backward, x4 with
grad checkpointing), at the cut lengths the step saw; phi and the loss are < 0.1 % and left
out. The set's one-off work (tokenising, encoding the anchors) is `setup_s`, not in
`s_per_step`; the anchor cache pays only when the set is read more than once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch

from labshared.config import resolve
from labshared.console import render_table
from labshared.data.text_triplets import load_text_triplets
from labshared.device import resolve_precision, setup_runtime
from labshared.training import BatchSampler
from rtd_cli import config as C
from rtd_cli import model as M
from rtd_cli.rtd_step import (
    StepSource,
    build_parts,
    cached_anchors,
    step_loss,
    tokenize_batch,
)
from rtd_cli.tokens import triplet_tokens, triplets_digest
from rtd_cli.train import make_optimizer

#: What each variant changes from `all` (the keys of `Switches`).
VARIANTS: dict[str, dict[str, Any]] = {
    "all": {},
    "no token cache": {"token_cache": False},
    "no sequence cut": {"cut": False},
    "no anchor cache": {"anchor_cache": False},
    "no fused AdamW": {"fused": False},
    "fp32 (no autocast)": {"precision": "fp32"},
    "+compile": {"compile": True},
    "+grad checkpointing": {"grad_checkpointing": True},
}


@dataclasses.dataclass(frozen=True)
class Switches:
    """The optimisations one variant runs with."""

    token_cache: bool = True
    cut: bool = True
    anchor_cache: bool = True
    fused: bool = True
    precision: str = "auto"
    compile: bool = False
    grad_checkpointing: bool = False


# --------------------------------------------------------------------------- FLOPs
def tower_flops(text_cfg: dict[str, Any], embed_dim: int, seqs: int, length: int) -> float:
    """Forward FLOPs of a CLIP text tower on `seqs` sequences of `length` tokens: per layer
    2 x the qkv, output and MLP matmuls (4 W^2 + 2 r W^2 multiply-adds a token) plus QK^T
    and AV (2 L W each a token, over the full L x L the masked kernel computes), then the
    pooled token's projection."""
    width, layers = text_cfg["width"], text_cfg["layers"]
    ratio = text_cfg.get("mlp_ratio", 4.0)
    per_token = layers * (2 * (4 + 2 * ratio) * width**2 + 4 * length * width)
    return seqs * (length * per_token + 2 * width * embed_dim)


# --------------------------------------------------------------------------- set-up
@dataclasses.dataclass
class Bench:
    """What every variant of one (device, backbone, batch) shares, built once."""

    parts: Any
    cfg: C.TrainConfig
    runtime: Any
    data: list
    tokens: Any
    anchors: torch.Tensor
    text_cfg: dict[str, Any]
    embed_dim: int
    setup_s: dict[str, float]
    compiled: Any = None  # the compiled tower, made on the first +compile run


_BENCHES: dict[tuple[str, str, int], Bench] = {}  # built on first use: a ViT-L takes seconds


def get_bench(device: str, backbone: str, batch_size: int) -> Bench:
    key = (device, backbone, batch_size)
    if key not in _BENCHES:
        _BENCHES.clear()  # one at a time: a GPU holds one set of towers
        _BENCHES[key] = build_bench(device, backbone, batch_size)
    return _BENCHES[key]


def build_bench(device: str, backbone: str, batch_size: int) -> Bench:
    model_cfg = open_clip.get_model_config(backbone)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip config {backbone!r}")
    text_cfg, embed_dim = model_cfg["text_cfg"], model_cfg["embed_dim"]
    runtime = setup_runtime(device, "auto", seed=0)
    n_triplets = max(8 * batch_size, 256)
    with tempfile.TemporaryDirectory() as tmp:
        phi = Path(tmp) / "phi.pt"
        M.save_projection(phi, M.build_projection("lincir", embed_dim, text_cfg["width"]), "lincir")
        overrides = {"backbone": backbone, "pretrained": "random", "phi": str(phi),
                     "triplets": f"toy:{n_triplets}", "batch_size": batch_size}  # fmt: skip
        cfg = resolve(C.TRAIN_PRESETS, "rtd-vit-l14", overrides, validate=C.validate_train)
        parts, _ = build_parts(cfg, runtime)  # the CLIP (image tower too) is dropped here
    data = load_text_triplets(cfg.triplets).triplets
    t0 = time.perf_counter()
    tokens = triplet_tokens(data, parts.tokenizer, parts.template, parts.symbol, parts.plain,
                            use_cache=False)  # fmt: skip
    t1 = time.perf_counter()
    anchors = cached_anchors(parts, tokens, runtime, triplets_key=triplets_digest(data),
                             chunk=2 * batch_size, use_cache=False)  # fmt: skip
    _sync(runtime.device)
    setup = {"tokenise_s": t1 - t0, "anchors_s": time.perf_counter() - t1}
    return Bench(parts, cfg, runtime, data, tokens, anchors, text_cfg, embed_dim, setup)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def switched(bench: Bench, sw: Switches):
    """The shared parts set up as `sw` says, and put back afterwards."""
    parts = bench.parts
    parts.cut = sw.cut
    parts.tower.transformer.grad_checkpointing = sw.grad_checkpointing
    if sw.compile and bench.compiled is None:  # as build_parts does for --compile
        bench.compiled = torch.compile(parts.tower)
    parts.trainable = bench.compiled if sw.compile else parts.tower
    try:
        yield
    finally:
        parts.cut, parts.trainable = True, parts.tower
        parts.tower.transformer.grad_checkpointing = False


# --------------------------------------------------------------------------- one variant
def run_variant(bench: Bench, name: str, steps: int, warmup: int) -> dict[str, Any]:
    sw = Switches(**VARIANTS[name])
    parts, cfg = bench.parts, bench.cfg
    device = bench.runtime.device
    runtime = dataclasses.replace(bench.runtime, precision=resolve_precision(sw.precision, device))
    source = StepSource(bench.tokens, bench.anchors if sw.anchor_cache else None)
    sampler = BatchSampler(len(bench.data), cfg.batch_size, cfg.seed)
    params = [p for p in parts.tower.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg, fused=None if sw.fused else False)
    gen = torch.Generator().manual_seed(0)
    flops, lengths = [], []

    def one(step: int) -> None:
        rows = sampler.indices(step)
        if sw.token_cache:
            batch = source.batch(rows)
        else:
            batch = tokenize_batch(parts, [bench.data[i] for i in rows.tolist()])
            if sw.anchor_cache:
                batch.anchors, batch.anchor_ids = source.batch(rows).anchors, None
        loss = step_loss(parts, batch, cfg, runtime, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        flops.append(step_flops(bench, sw, batch))
        lengths.append(seq_len(parts, batch.query_ids, sw))

    with switched(bench, sw):
        for s in range(warmup):
            one(s)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        flops.clear(), lengths.clear()
        t0 = time.perf_counter()
        for s in range(steps):
            one(warmup + s)
        _sync(device)
        dt = (time.perf_counter() - t0) / steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:  # the process's peak resident set (never decreases: an upper bound per variant)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "variant": name,
        "s_per_step": dt,
        "steps_per_s": 1 / dt,
        "peak_mem_gib": peak / 2**30,
        "flop_per_step": sum(flops) / len(flops),
        "seq_len": sum(lengths) / len(lengths),
        "precision": runtime.precision.name,
        "setup_s": bench.setup_s,
        "triplets_in_set": len(bench.data),
        "peak_mem_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS",
    }


def seq_len(parts: Any, ids: torch.Tensor, sw: Switches) -> int:
    """Tokens per query sequence the trainable tower ran on (after the cut, if any)."""
    return (M.cut_ids(ids, parts.tower) if sw.cut else ids).shape[1]


def step_flops(bench: Bench, sw: Switches, batch: Any) -> float:
    parts = bench.parts
    q_len = seq_len(parts, batch.query_ids, sw)
    flops = (4 if sw.grad_checkpointing else 3) * tower_flops(
        bench.text_cfg, bench.embed_dim, batch.query_ids.shape[0], q_len
    )
    if batch.anchor_ids is not None:
        a_len = seq_len(parts, batch.anchor_ids, sw)
        flops += tower_flops(bench.text_cfg, bench.embed_dim, batch.anchor_ids.shape[0], a_len)
    return flops


def run_variants(
    *,
    device: str,
    backbone: str,
    batch_size: int,
    steps: int,
    warmup: int,
    names: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Time `names` (default: every variant, in `VARIANTS` order) on one shared set-up.

    Args:
        device: `auto`, `cpu`, `cuda`, `cuda:N`.
        backbone: an open_clip config name (random weights), e.g. `ViT-L-14` or the small
            `tiny-clip-toy`.
        batch_size: triplets per step (the step encodes 2x that many queries).
        steps / warmup: timed steps, and untimed steps before them (compile happens there).

    Returns:
        one dict per variant: variant, s_per_step, steps_per_s, peak_mem_gib, flop_per_step,
        seq_len (mean query tokens per sequence), precision, setup_s, triplets_in_set.
    """
    bench = get_bench(device, backbone, batch_size)
    chosen = list(VARIANTS) if names is None else names
    unknown = [n for n in chosen if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    return [run_variant(bench, name, steps, warmup) for name in chosen]


# --------------------------------------------------------------------------- CLI
def best_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's row with the best time of its runs (and every run's time)."""
    best = min(r["s_per_step"] for r in runs)
    return {**runs[0], "s_per_step": best, "steps_per_s": 1 / best,
            "s_per_step_runs": [r["s_per_step"] for r in runs]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run every variant this many times, interleaved, and report the best time "
        "(load on a shared machine only ever adds time)",
    )  # fmt: skip
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",")] if args.variants else None
    rounds = [
        run_variants(
            device=args.device,
            backbone=args.backbone,
            batch_size=args.batch_size,
            steps=args.steps,
            warmup=args.warmup,
            names=names,
        )  # fmt: skip
        for _ in range(args.rounds)
    ]
    rows = [best_row([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    base = next((r["s_per_step"] for r in rows if r["variant"] == "all"), None)
    cells = [
        [r["variant"], f"{r['s_per_step']:.3f}", f"{r['s_per_step'] / base:.2f}x" if base else "",
         f"{r['seq_len']:.1f}", f"{r['flop_per_step'] / 1e9:.1f}", f"{r['peak_mem_gib']:.2f}"]
        for r in rows
    ]  # fmt: skip
    print(render_table(["variant", "s/step", "time vs all", "query tokens", "GFLOP/step",
                        "peak GiB"], cells))  # fmt: skip
    for r in rows:
        print(json.dumps({"backbone": args.backbone, "batch": args.batch_size, **r}))


if __name__ == "__main__":
    main()
