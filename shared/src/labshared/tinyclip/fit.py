"""Fitting the tiny CLIP from scratch on the toy world, and the cache of its fitted weights.

Each step renders a fresh batch of toy train images (`labshared.toy.make_split`) and draws
one caption variant per image (`captions`). The loss is a multi-positive form of CLIP's
contrastive loss (a partial caption is a positive for every image in the batch it is true
of: `multi_positive_clip_loss`), plus a digit cross-entropy head on the normalised image
embedding.

Why the digit head: a real CLIP arrives knowing objects from 400M pairs; on 3,500 MNIST
train digits the contrastive loss is lowered by colour and background first, and a tower
fitted on it alone sees the digit barely above chance on unseen digit instances (measured,
shared/README.md). The head (a `Linear(embed_dim, 10)` on the normalised image embedding,
weight `FitConfig.digit_weight`) is the stand-in for that object knowledge. It is dropped
after the fit: the saved weights are a plain open_clip state dict.

The fit runs once and is cached atomically at
`cache_root()/tinyclip/<key>.safetensors` (+ `<key>.json`: settings, fit time, metrics),
`<key>` hashing the architecture, the training settings, the toy-world settings, the
caption templates and `FIT_VERSION` (values, not this module's source: moving code keeps
the key); a `filelock.FileLock` stops two processes (pytest-xdist workers) fitting at once.

Fit profiles: `full` (the default, `FitConfig()`: what demos and effect gates use) and
`quick` (`QUICK_FIT`: a few dozen steps, for tests that need fitted weights but not their
quality). `default_fit()` picks one from `$LABSHARED_TINY_CLIP_FIT` (the test suite sets
`quick`, so `make test` never pays for the full fit).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock

from labshared import toy
from labshared.cache import cache_key, cache_root
from labshared.clip import create_clip
from labshared.console import log, make_progress, progress_enabled
from labshared.errors import ConfigError
from labshared.runs import atomic_write_json
from labshared.tinyclip.captions import PARTIAL_TEMPLATES, CaptionBank, caption_matches
from labshared.tinyclip.evaluate import evaluate_retrieval
from labshared.tinyclip.model import (
    MODEL_CONFIG,
    TINY_CLIP_NAME,
    create_random_tiny_clip,
    get_tokenizer,
    images_to_tensor,
    param_count,
    save_tiny_clip,
)

#: Bump when the fitting code changes in a way that changes the weights.
FIT_VERSION = 3


@dataclass(frozen=True)
class FitConfig:
    """Training settings of the tiny CLIP (all enter the cache key).

    Measured on 2 CPU cores (shared/README.md): 300 steps x 256 reach zero-shot digit
    0.967, colour and background 1.000, text->image attribute R@1 0.992 on 600 held-out
    renders.
    """

    steps: int = 300
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 20
    full_caption_prob: float = 0.6  # else a partial caption (see `caption_variants`)
    digit_weight: float = 1.0  # weight of the digit cross-entropy head (0: contrastive only)
    seed: int = 0
    image_size: int = 32


#: For tests that need fitted weights of the right shape, not their quality (seconds).
QUICK_FIT = FitConfig(steps=40, batch_size=128, warmup=4)
FIT_PROFILES: dict[str, FitConfig] = {"full": FitConfig(), "quick": QUICK_FIT}
FIT_PROFILE_ENV = "LABSHARED_TINY_CLIP_FIT"

#: CPU threads of every fit, whatever the caller set (a demo may run at one thread): the
#: float reduction order, hence the fitted weights, depends on it (1 thread gave attribute
#: R@1 0.990 where 2 give 0.998), and 2 is what CI and `make demo` machines have.
FIT_THREADS = 2


def default_fit() -> FitConfig:
    """The fit profile named by `$LABSHARED_TINY_CLIP_FIT` (`full` when unset).

    Raises:
        ConfigError: an unknown profile name.
    """
    name = os.environ.get(FIT_PROFILE_ENV, "full").strip().lower() or "full"
    if name not in FIT_PROFILES:
        raise ConfigError(f"${FIT_PROFILE_ENV}={name!r}; expected one of {', '.join(FIT_PROFILES)}")
    return FIT_PROFILES[name]


# --------------------------------------------------------------------------- loss
def multi_positive_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE where a caption may be true of several images (and an image
    described by several captions): the target of each row is uniform over its positives.

    With `positives` the identity this is exactly open_clip's `ClipLoss` (tested).
    Deviation from `ClipLoss`, which takes only the diagonal as positive: the toy captions
    are short and repeat ("a small digit" fits half the batch), and pushing a caption away
    from the images it is true of teaches the text tower nothing of what the words mean.

    Args:
        image_features, text_features: (B, D) L2-normalised.
        logit_scale: scalar, exp of the learned log-temperature.
        positives: (B_text, B_image) bool, caption i is true of image j; every row and
            column needs at least one True (the diagonal always is).
    """
    logits_per_text = logit_scale * text_features @ image_features.T  # (B, B)
    target = positives.float()
    text_to_image = -(target / target.sum(1, keepdim=True) * logits_per_text.log_softmax(1))
    image_to_text = -(target.T / target.sum(0)[:, None] * logits_per_text.T.log_softmax(1))
    return 0.5 * (text_to_image.sum(1).mean() + image_to_text.sum(1).mean())


# --------------------------------------------------------------------------- fitting
def _lr_at(step: int, fit: FitConfig) -> float:
    """Linear warm-up then cosine decay to 0 (open_clip_train's `cosine_lr`)."""
    if step < fit.warmup:
        return fit.lr * (step + 1) / fit.warmup
    progress = (step - fit.warmup) / max(1, fit.steps - fit.warmup)
    return 0.5 * fit.lr * (1 + math.cos(math.pi * progress))


def _fused_kwargs() -> dict[str, bool]:
    """Fused AdamW (one kernel over all tensors: 7x faster steps on CPU) where supported."""
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {}


def fit_tiny_clip(
    fit: FitConfig | None = None, device: str = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Train `tiny-clip-toy` from scratch on toy train images; returns (model, stats).

    Each step renders a fresh batch of train-split images (`toy.make_split` with a
    per-step seed) and draws one caption variant per image. Loss: symmetric InfoNCE with
    the learned logit scale over every caption-image pair the caption is true of
    (`multi_positive_clip_loss`; open_clip's `ClipLoss` when all captions differ) plus
    `fit.digit_weight` x the cross-entropy of a digit head on the normalised image
    embedding (module docstring); the head is not part of the returned model. Runs at
    `FIT_THREADS` torch threads.
    """
    fit = fit or default_fit()
    threads = torch.get_num_threads()
    torch.set_num_threads(FIT_THREADS)
    # The fit seeds and draws from the global CPU generator (model and head init): fork
    # it, so a command that fits the tiny CLIP on first use draws exactly what it would
    # have drawn with the fit cached (rtd train-phi's phi init differed between the two).
    try:
        with torch.random.fork_rng(devices=[]):
            return _fit(fit, device)
    finally:
        torch.set_num_threads(threads)


def _fit(fit: FitConfig, device: str) -> tuple[torch.nn.Module, dict]:
    start, start_cpu = time.perf_counter(), time.process_time()
    model = create_random_tiny_clip(fit.seed).to(device)
    # The digit head sees unit-norm features scaled by 10 (a fixed temperature), so its
    # logits live on the same scale whatever the embedding norm does during the fit.
    digit_head = torch.nn.Linear(MODEL_CONFIG["embed_dim"], len(toy.DIGIT_NAMES)).to(device)
    bank = CaptionBank(get_tokenizer())
    params = [*model.parameters(), *digit_head.parameters()]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": fit.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=fit.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        **_fused_kwargs(),
    )
    gen = torch.Generator().manual_seed(fit.seed)
    model.train()
    losses = []
    with make_progress() as progress:
        task = progress.add_task("fitting tiny CLIP", total=fit.steps, status="")
        for step in range(fit.steps):
            batch = toy.make_split(
                "train",
                fit.batch_size,
                config=toy.ToyConfig(size=fit.image_size, seed=fit.seed * 1_000_003 + step),
            )
            images = images_to_tensor(batch.images, device)
            tokens, variant = bank.sample(batch.attributes, gen, fit.full_caption_prob)
            positives = caption_matches(batch.attributes, variant).to(device)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, fit)
            image_features, text_features, logit_scale = model(images, tokens.to(device))
            loss = multi_positive_clip_loss(image_features, text_features, logit_scale, positives)
            if fit.digit_weight:
                digit_logits = digit_head(10.0 * image_features)
                loss = loss + fit.digit_weight * F.cross_entropy(
                    digit_logits, batch.digit.to(device)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # CLIP clamps the temperature at 100
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            progress.update(task, advance=1, status=f"loss {loss.item():.3f}")
            if not progress_enabled() and (step + 1) % 50 == 0:
                log(
                    f"tiny CLIP step {step + 1}/{fit.steps} loss {np.mean(losses[-50:]):.3f} "
                    f"({time.perf_counter() - start:.0f} s)"
                )
    model.eval()
    stats = {
        "fit_seconds": round(time.perf_counter() - start, 1),
        # CPU seconds of this process over all threads: on a busy machine, wall time
        # overstates the cost; cpu_seconds / torch_threads is the time on idle cores
        "fit_cpu_seconds": round(time.process_time() - start_cpu, 1),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "final_loss": float(np.mean(losses[-10:])),
        "params": param_count(model),
    }
    return model.cpu(), stats


# --------------------------------------------------------------------------- cache
def _cache_spec(fit: FitConfig) -> dict[str, Any]:
    return {
        "name": TINY_CLIP_NAME,
        "model": MODEL_CONFIG,
        "fit": dataclasses.asdict(fit),
        "toy": dataclasses.asdict(toy.ToyConfig(size=fit.image_size, seed=0)),
        "vocab": [toy.DIGIT_NAMES, toy.COLOUR_NAMES, toy.BACKGROUNDS, PARTIAL_TEMPLATES],
        "fit_version": FIT_VERSION,
    }


def tiny_clip_path(fit: FitConfig | None = None) -> Path:
    """Where the fitted weights for `fit` (default: `default_fit()`) live, fitted or not."""
    fit = fit or default_fit()
    return cache_root() / "tinyclip" / f"{cache_key(_cache_spec(fit))}.safetensors"


def ensure_tiny_clip(
    force: bool = False, *, fit: FitConfig | None = None, device: str = "cpu"
) -> Path:
    """Path of the fitted weights, fitting them first if absent (or if `force`).

    Safe under concurrency: a file lock serialises the fit, and the weights appear
    atomically, so a second process waits and then loads the first one's result.
    """
    fit = fit or default_fit()
    path = tiny_clip_path(fit)
    if path.is_file() and not force:
        log(f"[dim]tiny CLIP cache hit: {path}[/dim]")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        if path.is_file() and not force:
            log(f"[dim]tiny CLIP cache hit (fitted by another process): {path}[/dim]")
            return path
        log(f"fitting tiny CLIP ({fit.steps} steps x {fit.batch_size}) -> {path}")
        model, stats = fit_tiny_clip(fit, device=device)
        stats["retrieval"] = evaluate_retrieval(model)
        key = path.stem
        save_tiny_clip(model, path, metadata={"key": key, "name": TINY_CLIP_NAME})
        atomic_write_json(
            path.with_suffix(".json"), {"key": key, "spec": _cache_spec(fit), "stats": stats}
        )
        log(
            f"tiny CLIP fitted in {stats['fit_seconds']} s "
            f"(text->image R@1 {stats['retrieval']['t2i_r1']:.3f}); written {path}"
        )
    return path


def fit_stats(fit: FitConfig | None = None) -> dict | None:
    """The sidecar stats (fit time, metrics at fit time) of the cached fit, if any."""
    sidecar = tiny_clip_path(fit).with_suffix(".json")
    return json.loads(sidecar.read_text())["stats"] if sidecar.is_file() else None


def load_tiny_clip(device: str | torch.device = "cpu", *, fit: FitConfig | None = None):
    """(model, preprocess, tokenizer) of the fitted tiny CLIP, in eval mode on `device`.

    Goes through the shared factory `labshared.clip.create_clip` with the cached weights
    file (the activation: the architecture config's, which the fit used).
    """
    model, preprocess, tokenizer, _ = create_clip(
        TINY_CLIP_NAME, ensure_tiny_clip(fit=fit), device=device
    )
    return model, preprocess, tokenizer
