"""Frozen image features for `rtd eval`: batched `encode_image` under autocast, cached.

Features are computed once per (CLIP identity: backbone, weights tag or file SHA-256 and
activation, from `labshared.clip.ClipInfo.cache_identity`; benchmark image list and source,
split, transform, precision, `FEATURES_VERSION`) and stored with
`labshared.cache.cached_tensors` (safetensors + JSON sidecar holding the key's inputs), so a
changed input never reuses a stale entry. Random weights are never cached.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from labshared.cache import cached_tensors
from labshared.clip import ClipInfo
from labshared.console import make_progress
from rtd_cli.model import clip_dims

# Bump when image feature extraction changes. 2: the key holds the CLIP's activation, and
# OpenAI weights are built with QuickGELU (version 1 features of them used GELU).
FEATURES_VERSION = 2


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


def weights_id(clip_info: ClipInfo) -> dict[str, Any] | None:
    """What identifies the image tower (None: random weights, never cached)."""
    if clip_info.kind == "random":
        return None
    return clip_info.cache_identity()


def benchmark_features(
    bench, clip_model, preprocess, cfg, runtime, clip_info: ClipInfo, use_cache: bool = True
) -> tuple[torch.Tensor, dict[str, int]]:
    """Features of every image the benchmark uses, from the cache when possible.

    Args:
        cfg: an `eval_config.EvalConfig` (batch_size, workers).
        clip_info: what `model.build_clip_bundle` built (backbone, weights, activation).
        use_cache: read and write the feature cache (`--no-cache`: recompute).

    Returns:
        ((N, D) float32 unnormalised features, name -> row index).
    """
    names = bench.image_names()
    weights = weights_id(clip_info)
    spec = {
        "clip": weights,
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
        f"rtd-{bench.name}-{bench.split}", spec, compute, enabled=use_cache and weights is not None
    )
    return tensors["features"], {n: i for i, n in enumerate(names)}
