"""Data splits and frozen classifier features, shared by `tldr erm` (its test evaluation)
and the filter / retrain pipeline (`pipeline.py`).

- `load_splits`: the dataset splits a config names (`labshared.data.group_shift`);
- `ClassifierHandle`: a classifier with the content digest of its weights and the
  transform family it was trained with (`preprocess` in its meta.json);
- `classifier_features`: phi(x) per split, cached under a key of the classifier's file
  digest, the dataset fingerprint, the split, the transform and the precision (fp32 by
  default, `--feature-precision`).

Deviation (official code: caches keyed by file name, silently reused when anything
upstream changed): every cache key hashes what produced the entry, and hits are logged.
Classifier features are fp32 as in TLDR and DFR unless `--feature-precision` says otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labshared.cache import cached_tensors
from labshared.console import track
from labshared.data.group_shift import GroupShiftSplit, ImageDataset, build_group_shift
from labshared.device import Precision, Runtime, autocast, resolve_precision
from labshared.errors import ConfigError
from tldr_cli.classifier import Classifier, classifier_transform
from tldr_cli.config import ERM_RECIPES, TLDRConfig

FEATURE_CODE_VERSION = 1  # bump when feature extraction changes what it returns


def load_splits(cfg: TLDRConfig, splits=("train", "val", "test")) -> dict[str, GroupShiftSplit]:
    out = {}
    for split in splits:
        if cfg.dataset == "toy":
            n = {"train": cfg.toy_n_train, "val": cfg.toy_n_val, "test": cfg.toy_n_test}[split]
            out[split] = build_group_shift(
                "toy", None, split, n=n, corr=cfg.toy_corr, size=cfg.toy_size, seed=cfg.toy_seed
            )
        else:
            out[split] = build_group_shift(cfg.dataset, cfg.data_root, split)
    return out


def dataset_kind(data: GroupShiftSplit) -> str:
    """The preprocessing family: celeba (CenterCrop 178) or the Waterbirds-style default."""
    return "celeba" if data.class_names == ("non-blond", "blond") else data.dataset


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class ClassifierHandle:
    model: Classifier
    meta: dict[str, Any]
    ident: str  # content digest of the weights: part of every feature-cache key
    preprocess: str = "dataset"  # `classifier_transform` family it was trained with


def classifier_preprocess(meta: dict[str, Any], cfg: TLDRConfig) -> str:
    """The transform family of a loaded classifier: its meta.json's `preprocess`, else that
    of the recipe its meta names, else (a bare state-dict file) that of `--erm-recipe`, so
    `--classifier dfr_celeba.pt --erm-recipe dfr-celeba` extracts DFR's full-image view."""
    if meta.get("preprocess"):
        return meta["preprocess"]
    if meta.get("recipe") in ERM_RECIPES:
        return ERM_RECIPES[meta["recipe"]].preprocess
    return cfg.recipe.preprocess


def feature_precision(cfg: TLDRConfig, runtime: Runtime) -> Precision:
    """Autocast of the frozen forward passes: fp32 unless `--feature-precision` says
    otherwise (`runtime`: whatever `--precision` resolved to)."""
    if cfg.feature_precision == "runtime":
        return runtime.precision
    if cfg.feature_precision != "fp32" and runtime.device.type != "cuda":
        raise ConfigError(
            f"--feature-precision {cfg.feature_precision} needs a CUDA device (got "
            f"{runtime.device}); use fp32"
        )
    return resolve_precision(cfg.feature_precision, runtime.device)


def split_feature_spec(
    role: str,
    ident: Any,
    data: GroupShiftSplit,
    transform,
    precision: Precision,
    runtime: Runtime,
) -> dict[str, Any]:
    """The cache spec of a split's frozen features: the model (`role`: classifier or clip,
    and its identity), the split's file fingerprint, the transform, the autocast and TF32
    (process-wide, so it applies under any feature precision) and the code version."""
    code = FEATURE_CODE_VERSION
    return {role: ident, "data": data.fingerprint, "transform": repr(transform),
            "precision": precision.name, "tf32": runtime.tf32, "code": code}  # fmt: skip


def image_loader(data: GroupShiftSplit, transform, cfg: TLDRConfig):
    """Batches of (image tensor, index) in split order, for frozen forward passes."""
    return torch.utils.data.DataLoader(
        ImageDataset(data, transform),
        batch_size=cfg.feature_batch_size,
        num_workers=cfg.num_workers,
    )


@torch.no_grad()
def classifier_features(
    handle: ClassifierHandle,
    data: GroupShiftSplit,
    cfg: TLDRConfig,
    runtime: Runtime,
    use_cache: bool,
) -> torch.Tensor:
    """(N, D) float32 phi(x) of a split (eval transform), cached by content."""
    transform = classifier_transform(
        dataset_kind(data), handle.model.arch, preprocess=handle.preprocess
    )
    precision = feature_precision(cfg, runtime)
    spec = split_feature_spec("classifier", handle.ident, data, transform, precision, runtime)

    def compute():
        model = handle.model.to(runtime.device).eval()
        out = []
        for x, _ in track(
            image_loader(data, transform, cfg), f"classifier features ({data.split})"
        ):
            with autocast(runtime.device, precision):
                out.append(model.forward_features(x.to(runtime.device)).float().cpu())
        return {"features": torch.cat(out)}

    return cached_tensors(f"tldr-phi-{data.split}", spec, compute, enabled=use_cache)["features"]
