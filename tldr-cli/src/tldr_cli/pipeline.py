"""The steps `tldr filter` and `tldr retrain` share, each cached by content.

1. the dataset splits (`features.load_splits`);
2. the classifier: a given checkpoint, or ERM trained with the preset's recipe (cached
   under a key of dataset, architecture, initial weights, recipe and seed);
3. frozen classifier features phi(x) per split (`features.classifier_features`, shared
   with `tldr erm`), with the transform the classifier was trained with;
4. CLIP (open_clip name + tag or file, or the tiny toy CLIP, through the shared factory
   `labshared.clip`, which takes the activation from the weights: QuickGELU for OpenAI) and
   raw CLIP image embeddings of the training images (`TLDR:last_layer_retrain/tldr.py:L92-151`);
5. the mean modality gap over image-caption pairs;
6. the closed-form gap-constrained projector (`projector.py`).

Deviation (official code: caches keyed by file name, silently reused when anything
upstream changed): every cache key hashes what produced the entry, and hits are logged.
Deviation (official: CLIP embeds the classifier's ImageNet-normalised tensors): CLIP sees
its own preprocessing by default; `--clip-input classifier` restores the official input.
Deviation (official: OpenAI's `clip` package holds CLIP in fp16 on CUDA): the frozen
forward passes run in fp32 unless `--feature-precision` says otherwise; classifier
features are fp32 as in TLDR and DFR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labshared.cache import cache_key, cache_root, cached_tensors
from labshared.clip import ClipInfo, create_clip
from labshared.console import log, track
from labshared.data.group_shift import GroupShiftSplit
from labshared.device import Runtime, autocast
from labshared.errors import ConfigError
from labshared.tinyclip.fit import ensure_tiny_clip
from labshared.tinyclip.model import TINY_CLIP_NAME
from tldr_cli import __version__
from tldr_cli.classifier import build_classifier, classifier_transform, load_classifier
from tldr_cli.config import TLDRConfig
from tldr_cli.erm import train_erm
from tldr_cli.features import (
    FEATURE_CODE_VERSION,
    ClassifierHandle,
    classifier_features,
    classifier_preprocess,
    dataset_kind,
    feature_precision,
    file_digest,
    image_loader,
    load_splits,
    split_feature_spec,
)
from tldr_cli.gap import gap_pairs_fingerprint, load_gap_pairs
from tldr_cli.projector import Projector, modality_gap, solve_gap_ridge


# --------------------------------------------------------------------------- classifier
def obtain_classifier(
    cfg: TLDRConfig, train: GroupShiftSplit, runtime: Runtime
) -> ClassifierHandle:
    """The `--classifier` checkpoint, or an ERM classifier trained (once, cached)."""
    classifier = cfg.classifier
    if classifier:
        model, meta = load_classifier(classifier)
        path = Path(classifier)
        weights = path / "model.safetensors" if path.is_dir() else path
        if path.is_dir() and not weights.is_file():
            weights = path / "checkpoints" / "final" / "model.safetensors"
        if model.num_classes != train.n_classes:
            raise ConfigError(
                f"--classifier {classifier} has {model.num_classes} outputs; the dataset has "
                f"{train.n_classes} classes"
            )
        return ClassifierHandle(model, meta, file_digest(weights), classifier_preprocess(meta, cfg))
    spec = {
        "what": "tldr-erm",
        "data": train.fingerprint,
        "arch": cfg.arch,
        "backbone_weights": cfg.backbone_weights,
        "recipe": cfg.recipe,
        "seed": runtime.seed,
        "precision": runtime.precision.name,
        "tf32": runtime.tf32,
        "code": __version__,
    }
    folder = cache_root() / "tldr" / f"erm-{cache_key(spec)}"
    final = folder / "checkpoints" / "final"
    if not (final / "model.safetensors").is_file():
        log(f"no --classifier given: training ERM ({cfg.recipe.name} recipe) into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(json.dumps(spec, default=str, indent=2))
        model = build_classifier(cfg.arch, train.n_classes, cfg.backbone_weights)
        # An interrupted training (Ctrl-C saves its batch) continues on the next run; its
        # step log is the cache folder's metrics.jsonl, apart from the command's own.
        train_erm(
            model,
            train,
            cfg.recipe,
            runtime,
            folder,
            dataset_kind=dataset_kind(train),
            num_workers=cfg.num_workers,
            resume=True,
            cached=True,
        )
    else:
        log(f"[dim]cache hit: ERM classifier {final}[/dim]")
    model, meta = load_classifier(final)
    meta["path"] = str(final)
    return ClassifierHandle(
        model, meta, file_digest(final / "model.safetensors"), classifier_preprocess(meta, cfg)
    )


# --------------------------------------------------------------------------- CLIP
# Part of every CLIP cache key (image embeddings, gap, text embeddings) through
# `ClipHandle.ident`. 2: the key holds the activation, and OpenAI weights are built with
# QuickGELU (version-1 entries of them were computed with GELU).
CLIP_CACHE_VERSION = 2
TINY_CLIP_FITTED = "fitted"  # --clip-pretrained of tiny-clip-toy: the cached toy fit


@dataclass
class ClipHandle:
    model: Any
    preprocess: Any
    tokenizer: Any
    ident: dict[str, Any]  # backbone, weights (tag or SHA-256), activation, cache version
    info: ClipInfo | None = None

    @torch.no_grad()
    def encode_texts(
        self, texts: list[str], device: torch.device, batch_size: int = 1024
    ) -> torch.Tensor:
        """Raw (unnormalised) text embeddings, (N, D) float32."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i : i + batch_size]).to(device)
            out.append(self.model.encode_text(tokens).float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def encode_pil(self, images: list, device: torch.device, batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([self.preprocess(im) for im in images[i : i + batch_size]]).to(device)
            out.append(self.model.encode_image(x).float().cpu())
        return torch.cat(out)


def load_clip(cfg: TLDRConfig, device: torch.device) -> ClipHandle:
    """CLIP through the shared factory (`labshared.clip.create_clip`: the activation comes
    from the weights); `tiny-clip-toy` with `fitted` is the cached toy fit."""
    weights = cfg.clip_pretrained
    if cfg.clip_model == TINY_CLIP_NAME and weights == TINY_CLIP_FITTED:
        weights = str(ensure_tiny_clip())
    model, preprocess, tokenizer, info = create_clip(
        cfg.clip_model,
        weights,
        quick_gelu=cfg.quick_gelu,
        device=device,
        option_names=("--clip-model", "--clip-pretrained"),
    )
    log(f"CLIP {info.describe()}")
    ident = {**info.cache_identity(), "version": CLIP_CACHE_VERSION}
    return ClipHandle(model, preprocess, tokenizer, ident, info)


@torch.no_grad()
def clip_image_embeddings(
    clip: ClipHandle,
    data: GroupShiftSplit,
    cfg: TLDRConfig,
    runtime: Runtime,
    arch: str,
    use_cache: bool,
    preprocess: str = "dataset",
) -> torch.Tensor:
    """(N, D_clip) raw CLIP image embeddings of a split (`preprocess`: the classifier's
    transform family, used with `--clip-input classifier`)."""
    transform = (
        clip.preprocess
        if cfg.clip_input == "clip"
        else classifier_transform(dataset_kind(data), arch, preprocess=preprocess)
    )
    precision = feature_precision(cfg, runtime)
    spec = split_feature_spec("clip", clip.ident, data, transform, precision, runtime)

    def compute():
        out = []
        for x, _ in track(
            image_loader(data, transform, cfg), f"CLIP image embeddings ({data.split})"
        ):
            with autocast(runtime.device, precision):
                out.append(clip.model.encode_image(x.to(runtime.device)).float().cpu())
        return {"embeddings": torch.cat(out)}

    return cached_tensors(f"tldr-clipimg-{data.split}", spec, compute, enabled=use_cache)[
        "embeddings"
    ]


def gap_vector(
    clip: ClipHandle, cfg: TLDRConfig, runtime: Runtime, use_cache: bool
) -> torch.Tensor:
    """(D_clip,) float64 mean modality gap over `cfg.n_gap_pairs` image-caption pairs."""
    if not cfg.gap_pairs:
        raise ConfigError("--gap-pairs is required: a COCO captions folder, a JSONL file, or 'toy'")
    source = cfg.gap_pairs
    spec = {
        "clip": clip.ident,
        "pairs": gap_pairs_fingerprint(source),
        "n": cfg.n_gap_pairs,
        "seed": runtime.seed,
        "preprocess_embed": cfg.preprocess_embed,
        "tf32": runtime.tf32,
        "code": FEATURE_CODE_VERSION,
    }

    def compute():
        images, captions = load_gap_pairs(
            source, cfg.n_gap_pairs, torch.Generator().manual_seed(runtime.seed)
        )
        img = embed_space(clip.encode_pil(images, runtime.device), cfg)
        txt = embed_space(clip.encode_texts(captions, runtime.device), cfg)
        return {"gap": modality_gap(img, txt)}

    return cached_tensors("tldr-gap", spec, compute, enabled=use_cache)["gap"]


def embed_space(emb: torch.Tensor, cfg: TLDRConfig) -> torch.Tensor:
    """CLIP embeddings as the projector sees them: raw (`preprocess_embed` "none", the
    paper's script) or L2-normalised ("clip_normalize", the official option of the same
    name: image embeddings, both sides of the gap, and each word before and the pair mean
    after averaging)."""
    if cfg.preprocess_embed == "clip_normalize":
        return torch.nn.functional.normalize(emb, dim=-1)
    return emb


def fit_projector(
    x_clip: torch.Tensor, y_phi: torch.Tensor, gap: torch.Tensor, lam: float
) -> Projector:
    """The frozen Linear + ReLU projector from CLIP to phi space (closed form, float64)."""
    w, b = solve_gap_ridge(x_clip, y_phi, gap, lam)
    return Projector(w, b, relu=True)


# --------------------------------------------------------------------------- all together
@dataclass
class Context:
    cfg: TLDRConfig
    runtime: Runtime
    splits: dict[str, GroupShiftSplit]
    classifier: ClassifierHandle
    features: dict[str, torch.Tensor]
    clip: ClipHandle | None  # None: DFR only
    gap: torch.Tensor | None
    projector: Projector | None
    clip_train: torch.Tensor | None  # (N, D_clip) raw CLIP image embeddings of train images

    @torch.no_grad()
    def projector_r2(self) -> float:
        """R^2 of P(CLIP image embedding) against phi(image) on the training images: how
        much of the classifier's feature space the projector reaches at all."""
        y = self.features["train"].double()
        dev = self.projector.linear.weight.device
        pred = torch.cat(
            [
                self.projector(self.clip_train[i : i + 8192].to(dev)).double().cpu()
                for i in range(0, len(y), 8192)
            ]
        )
        return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def prepare(
    cfg: TLDRConfig,
    runtime: Runtime,
    use_cache: bool,
    feature_splits=("train", "val", "test"),
    with_projector: bool = True,
    splits: dict[str, GroupShiftSplit] | None = None,
) -> Context:
    """Steps 1-6 (module docstring); without `with_projector` (DFR alone) CLIP, the gap and
    the projector are skipped and left None. `splits` already loaded are reused."""
    wanted = tuple(dict.fromkeys(("train", *feature_splits)))
    splits = dict(splits or {})
    missing = tuple(s for s in wanted if s not in splits)
    if missing:
        splits.update(load_splits(cfg, missing))
    handle = obtain_classifier(cfg, splits["train"], runtime)
    feats = {
        s: classifier_features(handle, splits[s], cfg, runtime, use_cache) for s in feature_splits
    }
    if not with_projector:
        return Context(cfg, runtime, splits, handle, feats, None, None, None, None)
    clip = load_clip(cfg, runtime.device)
    x_clip = embed_space(
        clip_image_embeddings(
            clip, splits["train"], cfg, runtime, handle.model.arch, use_cache, handle.preprocess
        ),
        cfg,
    )
    gap = gap_vector(clip, cfg, runtime, use_cache)
    projector = fit_projector(x_clip, feats["train"], gap, cfg.ridge_lambda)
    return Context(
        cfg, runtime, splits, handle, feats, clip, gap, projector.to(runtime.device), x_clip
    )
