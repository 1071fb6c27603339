"""Frozen image features for `rtd eval`: batched `encode_image` under autocast, cached.

Features are computed once per (CLIP identity: backbone, weights tag or file SHA-256 and
activation, from `labshared.clip.ClipInfo.cache_identity`; benchmark image list and source,
split, transform, precision, `FEATURES_VERSION`, and the decode path when JPEGs are decoded
by torchvision (`--decode gpu`), whose pixels differ from PIL's by up to 1/255) and stored with
`labshared.cache.cached_tensors` (safetensors + JSON sidecar holding the key's inputs), so a
changed input never reuses a stale entry. Random weights are never cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from labshared.cache import cached_tensors
from labshared.clip import ClipInfo
from labshared.console import log, make_progress
from rtd_cli.gallery_loader import (
    TENSOR_PATH_VERSION,
    ImageBatches,
    default_workers,
    resolve_decode,
)
from rtd_cli.model import clip_dims

# Bump when image feature extraction changes. 2: the key holds the CLIP's activation, and
# OpenAI weights are built with QuickGELU (version 1 features of them used GELU).
FEATURES_VERSION = 2


@torch.no_grad()
def encode_batch(clip_model, images: torch.Tensor, runtime) -> torch.Tensor:
    """(B, D) float32 CPU `encode_image` features of normalised (B, 3, h, w) images on the
    device, computed under the runtime's autocast (bf16 on GPUs)."""
    with runtime.autocast():
        feats = clip_model.encode_image(images)
    return feats.float().cpu()


@torch.no_grad()
def encode_images(
    clip_model, batches: Iterable[torch.Tensor], n: int, runtime, label: str
) -> torch.Tensor:
    """(n, D) float32 unnormalised `encode_image` features of `batches` (in order)."""
    out = torch.empty(n, clip_dims(clip_model)[0])
    start = 0
    with make_progress() as progress:
        task = progress.add_task(label, total=n, status="")
        for images in batches:
            feats = encode_batch(clip_model, images, runtime)
            out[start : start + len(feats)] = feats
            start += len(feats)
            progress.advance(task, len(feats))
    assert start == n, f"{label}: encoded {start} of {n} images"
    return out


def weights_id(clip_info: ClipInfo) -> dict[str, Any] | None:
    """What identifies the image tower (None: random weights, never cached)."""
    if clip_info.kind == "random":
        return None
    return clip_info.cache_identity()


def benchmarks_features(
    benches, clip_model, preprocess, cfg, runtime, clip_info: ClipInfo, use_cache: bool = True
) -> list[tuple[torch.Tensor, dict[str, int]]]:
    """Features of every image each benchmark part uses, from the cache when possible.

    The parts missing from the cache are encoded through one `gallery_loader.ImageBatches`
    (its workers persist across parts).

    Args:
        benches: the benchmark's parts.
        cfg: an `rtd_cli.config.EvalConfig` (batch_size, workers, decode).
        clip_info: what `model.build_clip_bundle` built (backbone, weights, activation).
        use_cache: read and write the feature cache (`--no-cache`: recompute).

    Returns:
        Per part: ((N, D) float32 unnormalised features, name -> row index).
    """
    names = [b.image_names() for b in benches]
    weights = weights_id(clip_info)
    decode = resolve_decode(cfg.decode, runtime.device, preprocess)
    workers = cfg.workers if cfg.workers is not None else default_workers(runtime.device)
    batches = ImageBatches(
        [(b.images, n) for b, n in zip(benches, names, strict=True)],
        preprocess,
        runtime.device,
        batch_size=cfg.batch_size,
        workers=workers,
        decode=decode,
    )
    out = []
    for i, bench in enumerate(benches):
        spec = {
            "clip": weights,
            "benchmark": bench.fingerprint(),
            "transform": repr(preprocess),
            "precision": runtime.precision.name,
            "tf32": runtime.tf32,  # process-wide matmul mode, so part of what was computed
            "version": FEATURES_VERSION,
        }
        if decode == "tensor":  # other decoder and resize kernels: pixels within 1/255
            spec["decode"] = {
                "path": "torchvision decode_jpeg + two-pass tensor resize",
                "device": runtime.device.type,
                "version": TENSOR_PATH_VERSION,
            }

        def compute(i=i, bench=bench) -> dict[str, torch.Tensor]:
            log(f"{bench.name} {bench.split}: {len(names[i])} images, decode {decode}, "
                f"{workers} workers")  # fmt: skip
            label = f"{bench.name} {bench.split} images"
            feats = encode_images(clip_model, batches.part(i), len(names[i]), runtime, label)
            return {"features": feats}

        tensors = cached_tensors(
            f"rtd-{bench.name}-{bench.split}",
            spec,
            compute,
            enabled=use_cache and weights is not None,
        )
        out.append((tensors["features"], {n: j for j, n in enumerate(names[i])}))
    return out
