"""A tiny CLIP stand-in fitted on the toy world's captions (the offline default model).

`tiny-clip-toy` is an ordinary open_clip architecture (its JSON config,
`resources/model_configs/tiny-clip-toy.json`, is registered by `labshared.clip`): an
open_clip ModifiedResNet image tower (`"layers": [1, 1, 1, 1], "width": 32`, 32 px input,
attention pooling) and a text transformer of width 128, 3 layers, context 16, with
open_clip's standard BPE vocabulary (49408), so `open_clip.get_tokenizer("tiny-clip-toy")`
works. It is trained from scratch on freshly rendered toy train images
(`labshared.toy.make_split`) and their captions, mixed with partial captions ("a seven",
"a red digit", "on grass", "a small digit") so single words embed sensibly, with a
multi-positive form of CLIP's contrastive loss (a partial caption is a positive for every
image in the batch it is true of: `multi_positive_clip_loss`), plus a digit cross-entropy
head on the normalised image embedding.

Why the digit head: a real CLIP arrives knowing objects from 400M pairs; on 3,500 MNIST
train digits the contrastive loss is lowered by colour and background first, and a tower
fitted on it alone sees the digit barely above chance on unseen digit instances (measured,
shared/README.md). The head (a `Linear(embed_dim, 10)` on the normalised image embedding,
weight `FitConfig.digit_weight`) is the stand-in for that object knowledge. It is dropped
after the fit: the saved weights are a plain open_clip state dict.

Why a ModifiedResNet, not a ViT: a patch-8 ViT on 32 px sees the digit as 16 tokens and
does not learn its shape in this budget; the convolutional tower does (shared/README.md).

The fit runs once and is cached atomically at
`cache_root()/tinyclip/<key>.safetensors` (+ `<key>.json`: settings, fit time, metrics),
`<key>` hashing the architecture, the training settings, the toy-world settings and
`FIT_VERSION`; a `filelock.FileLock` stops two processes (pytest-xdist workers) fitting at
once. Through the shared factory (or open_clip's own, with the path)::

    from labshared.clip import create_clip
    from labshared.tinyclip import TINY_CLIP_NAME, ensure_tiny_clip
    model, preprocess, tokenizer, info = create_clip(TINY_CLIP_NAME, ensure_tiny_clip())

Fit profiles: `full` (the default, `FitConfig()`: what demos and effect gates use) and
`quick` (`QUICK_FIT`: a few dozen steps, for tests that need fitted weights but not their
quality). `default_fit()` picks one from `$LABSHARED_TINY_CLIP_FIT` (the test suite sets
`quick`, so `make test` never pays for the full fit).

Preprocessing: open_clip's default image transform for a local weights file (resize and
centre-crop to 32, `ToTensor`, normalise with the OpenAI CLIP mean/std `MEAN`, `STD`). The
model is trained with exactly that normalisation, so PIL images through `preprocess` and
uint8 toy tensors through `images_to_tensor` give identical inputs.

`python -m labshared.tinyclip --report` fits (or loads) the model and prints its figures on
600 toy test images (digit instances never seen in fitting), with the fit's wall and CPU
time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from filelock import FileLock

from labshared import toy
from labshared.cache import cache_key, cache_root
from labshared.clip import create_clip, read_model_config, register_model_configs
from labshared.console import log, make_progress, progress_enabled, render_table
from labshared.errors import ConfigError
from labshared.runs import atomic_save_safetensors, atomic_write_json

TINY_CLIP_NAME = "tiny-clip-toy"
#: Bump when the fitting code changes in a way that changes the weights.
FIT_VERSION = 3

#: The architecture, in open_clip's model-config format: the JSON file that
#: `labshared.clip` registers with open_clip (resources/model_configs/tiny-clip-toy.json).
MODEL_CONFIG: dict[str, Any] = read_model_config(TINY_CLIP_NAME)

#: open_clip's defaults (OpenAI CLIP statistics), used both in fitting and in `preprocess`.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


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


def default_fit() -> FitConfig:
    """The fit profile named by `$LABSHARED_TINY_CLIP_FIT` (`full` when unset).

    Raises:
        ConfigError: an unknown profile name.
    """
    name = os.environ.get(FIT_PROFILE_ENV, "full").strip().lower() or "full"
    if name not in FIT_PROFILES:
        raise ConfigError(f"${FIT_PROFILE_ENV}={name!r}; expected one of {', '.join(FIT_PROFILES)}")
    return FIT_PROFILES[name]


# --------------------------------------------------------------------------- captions
#: Partial-caption templates; fields {d} digit, {c} colour, {b} background, {s} small/large,
#: {p} even/odd.
PARTIAL_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {d} on {b}.",
    "a {c} {d}",
    "a {d} on {b}",
    "a {c} digit on {b}",
    "a {c} digit",
    "a {d}",
    "a photo of a {d}.",
    "a photo of a {c} {d}.",
    "on {b}",
    "a photo of {b}.",
    "a digit on {b}",
    "a photo of a digit on {b}.",
    "a photo of a {c} digit on {b}.",
    "{c}",
    "{d}",
    "{b}",
    "a {s} digit",  # s: small (0-4) / large (5-9), toy.CLASS_FNS["digit<5"] label names
    "a photo of a {s} digit.",
    "an {p} digit",  # p: even / odd, toy.CLASS_FNS["parity"] label names
)


def caption_variants(digit: int, colour: int, background: int) -> list[str]:
    """Full caption first, then every partial caption of one attribute triple."""
    d, c, b = toy.DIGIT_NAMES[digit], toy.COLOUR_NAMES[colour], toy.BACKGROUNDS[background]
    size = "small" if digit < 5 else "large"
    parity = "even" if digit % 2 == 0 else "odd"
    return [toy.caption(digit, colour, background)] + [
        t.format(d=d, c=c, b=b, s=size, p=parity) for t in PARTIAL_TEMPLATES
    ]


# --------------------------------------------------------------------------- registry
def register_tiny_clip() -> str:
    """Register `tiny-clip-toy` with open_clip (idempotent; importing `labshared.clip`
    already did); returns the name."""
    register_model_configs()
    return TINY_CLIP_NAME


def get_tokenizer():
    """open_clip's BPE tokenizer with the tiny model's context length (16)."""
    register_tiny_clip()
    return open_clip.get_tokenizer(TINY_CLIP_NAME)


def create_random_tiny_clip(seed: int = 0) -> torch.nn.Module:
    """An untrained `tiny-clip-toy` (deterministic in `seed`), built by the shared factory
    with the activation its config names (what the fitted weights are then trained with)."""
    torch.manual_seed(seed)
    return create_clip(TINY_CLIP_NAME, "random").model


def param_count(model: torch.nn.Module) -> int:
    """Number of parameters of `model` (tied tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_tiny_clip(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the state dict as safetensors, atomically (open_clip loads it via `pretrained`)."""
    return atomic_save_safetensors(path, model.state_dict(), metadata=metadata)


# --------------------------------------------------------------------------- images
def images_to_tensor(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 3, 32, 32) toy images -> normalised float input, same as `preprocess`."""
    x = images.to(device=device, dtype=torch.float32) / 255.0
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------- fitting
def _cache_spec(fit: FitConfig) -> dict[str, Any]:
    return {
        "name": TINY_CLIP_NAME,
        "model": MODEL_CONFIG,
        "fit": dataclasses.asdict(fit),
        "toy": dataclasses.asdict(toy.ToyConfig(size=fit.image_size, seed=0)),
        "vocab": [toy.DIGIT_NAMES, toy.COLOUR_NAMES, toy.BACKGROUNDS, PARTIAL_TEMPLATES],
        "fit_version": FIT_VERSION,
    }


def _lr_at(step: int, fit: FitConfig) -> float:
    """Linear warm-up then cosine decay to 0 (open_clip_train's `cosine_lr`)."""
    if step < fit.warmup:
        return fit.lr * (step + 1) / fit.warmup
    progress = (step - fit.warmup) / max(1, fit.steps - fit.warmup)
    return 0.5 * fit.lr * (1 + math.cos(math.pi * progress))


#: What each caption variant states about its image, as flags over `CAPTION_FIELDS`
#: (variant 0 is the full caption; the others follow `PARTIAL_TEMPLATES`).
CAPTION_FIELDS: tuple[str, ...] = ("digit", "colour", "background", "size", "parity")
_FIELD_PLACEHOLDERS = ("{d}", "{c}", "{b}", "{s}", "{p}")


def variant_fields() -> torch.Tensor:
    """(V, 5) bool: which of `CAPTION_FIELDS` each caption variant names."""
    full = [True, True, True, False, False]
    rows = [full] + [[ph in t for ph in _FIELD_PLACEHOLDERS] for t in PARTIAL_TEMPLATES]
    return torch.tensor(rows)


def caption_matches(attrs: torch.Tensor, variant: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: caption i (of image i, variant `variant[i]`) is true of image j.

    "a small digit" written for image i is just as true of every other small digit in the
    batch, and a full caption of every image with the same three attributes.

    Args:
        attrs: (B, 3) long digit, colour, background of each image.
        variant: (B,) long caption variant drawn for each image.
    """
    digit = attrs[:, 0]
    keys = torch.stack([digit, attrs[:, 1], attrs[:, 2], (digit >= 5).long(), digit % 2], 1)
    equal = keys[:, None, :] == keys[None, :, :]  # (B, B, 5)
    named = variant_fields()[variant]  # (B, 5) the fields caption i states
    return (equal | ~named[:, None, :]).all(-1)


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


class _CaptionBank:
    """Every caption variant of every attribute triple, tokenised once."""

    def __init__(self, tokenizer) -> None:
        nd, nc, nb = len(toy.DIGIT_NAMES), len(toy.COLOUR_NAMES), len(toy.BACKGROUNDS)
        texts = [caption_variants(d, c, b) for d in range(nd) for c in range(nc) for b in range(nb)]
        self.n_variants = len(texts[0])
        self.shape = (nd, nc, nb)
        self.tokens = tokenizer([t for variants in texts for t in variants])  # (T*V, ctx)

    def sample(
        self, attrs: torch.Tensor, gen: torch.Generator, full_prob: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, variant) for each (digit, colour, background) row: the full caption
        (variant 0) with probability `full_prob`, else a uniformly chosen partial caption."""
        nd, nc, nb = self.shape
        triple = (attrs[:, 0] * nc + attrs[:, 1]) * nb + attrs[:, 2]
        partial = torch.randint(1, self.n_variants, (len(attrs),), generator=gen)
        full = torch.rand(len(attrs), generator=gen) < full_prob
        variant = torch.where(full, torch.zeros_like(partial), partial)
        return self.tokens[triple * self.n_variants + variant], variant


def _fused_kwargs() -> dict[str, bool]:
    """Fused AdamW (one kernel over all tensors: 7x faster steps on CPU) where supported."""
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {}


#: CPU threads of every fit, whatever the caller set (a demo may run at one thread): the
#: float reduction order, hence the fitted weights, depends on it (1 thread gave attribute
#: R@1 0.990 where 2 give 0.998), and 2 is what CI and `make demo` machines have.
FIT_THREADS = 2


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
    tokenizer = get_tokenizer()
    bank = _CaptionBank(tokenizer)
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
                open_clip_model(model).logit_scale.clamp_(0, math.log(100))
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


def open_clip_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model behind an optional DDP wrapper."""
    return getattr(model, "module", model)


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


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def encode_images(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised features of uint8 (N, 3, 32, 32) toy images, batched."""
    device = next(model.parameters()).device
    feats = [
        model.encode_image(images_to_tensor(images[i : i + batch_size], device)).float()
        for i in range(0, len(images), batch_size)
    ]
    return F.normalize(torch.cat(feats), dim=-1) if feats else torch.empty(0, 0)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, texts: Sequence[str], batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised features of strings (tiny-clip-toy tokenizer, context 16), batched."""
    device = next(model.parameters()).device
    tokenizer = get_tokenizer()
    feats = [
        model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device)).float()
        for i in range(0, len(texts), batch_size)
    ]
    return F.normalize(torch.cat(feats), dim=-1) if feats else torch.empty(0, 0)


@torch.no_grad()
def evaluate_retrieval(model: torch.nn.Module, n: int = 600, seed: int = 0) -> dict[str, float]:
    """Zero-shot retrieval on `n` toy TEST images (digits never seen in training).

    - `t2i_r1`: each image's caption queries the n images; a hit when the top image has
      the caption's attributes (captions can repeat, so any image with the same
      (digit, colour, background) counts). `t2i_chance`: expected R@1 of a random ranking,
      the mean fraction of images sharing the query's attributes.
    - `i2t_r1`: each image queries the n captions; a hit when the top caption is its own
      caption string. `i2t_chance` likewise.
    - `t2i_<attr>`: fraction of text->image top hits with the right digit / colour /
      background.
    - `zeroshot_<attr>`: zero-shot classification accuracy of each attribute with the
      prompts "a photo of a {digit}.", "a {colour} digit", "on {background}".
    """
    model.eval()
    data = toy.make_split("test", n, size=MODEL_CONFIG["vision_cfg"]["image_size"], seed=seed)
    img, txt = encode_images(model, data.images), encode_texts(model, data.captions)
    attrs = data.attributes
    same = (attrs[:, None, :] == attrs[None, :, :]).all(-1)  # (n, n) same attribute triple
    t2i = (txt @ img.T).argmax(1)
    i2t = (img @ txt.T).argmax(1)
    rows = torch.arange(n)
    out = {
        "n": n,
        "t2i_r1": same[rows, t2i].float().mean().item(),
        "t2i_chance": same.float().mean().item(),
        "i2t_r1": same[rows, i2t].float().mean().item(),
        "i2t_chance": same.float().mean().item(),
    }
    for k, name in enumerate(toy.ATTRIBUTES):
        out[f"t2i_{name}"] = (attrs[t2i, k] == attrs[:, k]).float().mean().item()
    prompts = {
        "digit": [f"a photo of a {d}." for d in toy.DIGIT_NAMES],
        "colour": [f"a {c} digit" for c in toy.COLOUR_NAMES],
        "background": [f"on {b}" for b in toy.BACKGROUNDS],
    }
    for k, name in enumerate(toy.ATTRIBUTES):
        cls = encode_texts(model, prompts[name])
        pred = (img @ cls.T).argmax(1)
        out[f"zeroshot_{name}"] = (pred == attrs[:, k]).float().mean().item()
    return out


# --------------------------------------------------------------------------- report
def report(force: bool = False, fit: FitConfig | None = None) -> dict[str, Any]:
    """Fit (or load) the tiny CLIP, evaluate it and return the figures."""
    fit = fit or default_fit()
    if force:
        ensure_tiny_clip(force=True, fit=fit)
    model, _, _ = load_tiny_clip(fit=fit)
    stats = fit_stats(fit) or {}
    figures: dict[str, Any] = {"weights": str(tiny_clip_path(fit)), "params": param_count(model)}
    for key in ("fit_seconds", "fit_cpu_seconds", "torch_threads"):
        figures[key] = stats.get(key)
    figures.update(evaluate_retrieval(model))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m labshared.tinyclip`: fit (cached) and print the figures table on stdout.

    Returns the exit status: 0, or 1 with one line on stderr for a bad fit profile.
    """
    parser = argparse.ArgumentParser(
        prog="python -m labshared.tinyclip",
        description="Fit (once, cached) and evaluate the tiny CLIP stand-in on the toy world.",
    )
    parser.add_argument("--report", action="store_true", help="print the model's figures")
    parser.add_argument("--force", action="store_true", help="refit even if cached")
    parser.add_argument(
        "--fit",
        choices=sorted(FIT_PROFILES),
        default=None,
        help=f"fit profile (default: ${FIT_PROFILE_ENV}, else full)",
    )
    args = parser.parse_args(argv)
    if not args.report and not args.force:
        parser.print_help()
        return 0
    try:
        fit = FIT_PROFILES[args.fit] if args.fit else default_fit()
        figures = report(force=args.force, fit=fit)
    except ConfigError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    rows = [
        (key, f"{value:.3f}" if isinstance(value, float) else str(value))
        for key, value in figures.items()
    ]
    title = f"{TINY_CLIP_NAME} on {figures['n']} toy test images"
    sys.stdout.write(render_table(("figure", "value"), rows, title=title) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
