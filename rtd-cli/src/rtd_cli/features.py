"""Frozen image features for `rtd eval`: batched `encode_image` under autocast, cached.

Features are computed once per (backbone, weights, benchmark image list and source, split,
transform, precision, `FEATURES_VERSION`) and stored with `labshared.cache.cached_tensors`
(safetensors + JSON sidecar holding the key's inputs), so a changed input never reuses a
stale entry. Random weights are never cached.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from labshared.cache import cached_tensors, file_fingerprint
from labshared.console import make_progress
from rtd_cli.model import RANDOM_WEIGHTS, TINY_BACKBONE, clip_dims

FEATURES_VERSION = 1  # bump when image feature extraction changes


class _ImageList(torch.utils.data.Dataset):
    def __init__(self, names: Sequence[str], source: Any, preprocess: Any) -> None:
        self.names, self.source, self.preprocess = list(names), source, preprocess

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.source.load(self.names[i]))


@torch.no_grad()
def encode_images(
    clip_model,
    preprocess,
    source,
    names: Sequence[str],
    runtime,
    batch_size: int,
    workers: int,
    label: str,
) -> torch.Tensor:
    """(N, D) float32 unnormalised `encode_image` features, batched, under autocast."""
    loader = torch.utils.data.DataLoader(
        _ImageList(names, source, preprocess),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=runtime.device.type == "cuda",
    )
    out = torch.empty(len(names), clip_dims(clip_model)[0])
    start = 0
    with make_progress() as progress:
        task = progress.add_task(label, total=len(names), status="")
        for images in loader:
            with runtime.autocast():
                feats = clip_model.encode_image(images.to(runtime.device, non_blocking=True))
            out[start : start + len(feats)] = feats.float().cpu()
            start += len(feats)
            progress.advance(task, len(feats))
    return out


def weights_id(cfg) -> dict[str, Any] | None:
    """What identifies the image tower's weights (None: random, never cached)."""
    if cfg.pretrained == RANDOM_WEIGHTS:
        return None
    if cfg.pretrained and Path(cfg.pretrained).is_file():
        return file_fingerprint(cfg.pretrained)
    if cfg.backbone == TINY_BACKBONE and cfg.pretrained is None:
        from labshared.tinyclip import ensure_tiny_clip

        return file_fingerprint(ensure_tiny_clip())
    return {"tag": cfg.pretrained}


def benchmark_features(
    bench, clip_model, preprocess, cfg, runtime
) -> tuple[torch.Tensor, dict[str, int]]:
    """Features of every image the benchmark uses, from the cache when possible.

    Args:
        cfg: an `evaluate.EvalConfig` (backbone, pretrained, batch_size, workers, cache).

    Returns:
        ((N, D) float32 unnormalised features, name -> row index).
    """
    names = bench.image_names()
    weights = weights_id(cfg)
    spec = {
        "backbone": cfg.backbone,
        "weights": weights,
        "benchmark": bench.fingerprint(),
        "transform": repr(preprocess),
        "precision": runtime.precision.name,
        "version": FEATURES_VERSION,
    }

    def compute() -> dict[str, torch.Tensor]:
        label = f"{bench.name} {bench.split} images"
        workers = cfg.workers
        if workers is None:  # decoding JPEGs is the bottleneck next to a GPU, not on a CPU
            workers = min(8, os.cpu_count() or 1) if runtime.device.type == "cuda" else 0
        feats = encode_images(
            clip_model, preprocess, bench.images, names, runtime, cfg.batch_size, workers, label
        )
        return {"features": feats}

    tensors = cached_tensors(
        f"rtd-{bench.name}-{bench.split}", spec, compute, enabled=cfg.cache and weights is not None
    )
    return tensors["features"], {n: i for i, n in enumerate(names)}
