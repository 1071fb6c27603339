"""The config of `rtd eval` (`EvalConfig`), resolved and checked before anything loads.

`rtd eval` has no presets: its defaults are `EvalConfig`'s, and every flag given overrides
one field of the same name (`labshared.config.resolve`, None = flag not passed). Without
`--prompt`, the prompt style is the one the `--text-encoder` was trained with, else the
base's (`default_prompt_style`), so the tower file is read here, whole: a truncated or
foreign file is one error naming it, before any model or image loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labshared.config import resolve, unknown_name
from labshared.data.composed_retrieval import DATASETS
from labshared.errors import ConfigError
from rtd_cli.config import TOY_EVAL_DISTRACTORS, TOY_EVAL_QUERIES
from rtd_cli.projection import BASES, PROMPT_STYLES
from rtd_cli.projection import default_prompt_style as base_default_prompt
from rtd_cli.tower_file import read_text_tower_config

FIQ_ORDERS = ("both", "single")
DEFAULT_BACKBONE = "ViT-B-32"  # the real benchmarks' default (`--backbone`)
TOY_BACKBONE = "tiny-clip-toy"  # the toy benchmark's: fitted offline, as `--preset toy` uses
DECODES = ("cpu", "gpu", "auto")  # where `rtd eval` decodes JPEGs (rtd_cli.gallery_loader)


@dataclass(frozen=True)
class EvalConfig:
    """Everything `rtd eval` needs (the resolved config saved in config.json).

    Attributes:
        dataset: fashioniq | cirr | circo | genecis | toy (required).
        split: val | test (None: the dataset's default: test for GeneCIS, val otherwise).
        base: pic2word | searle | lincir (projection type, checkpoint format, prompts).
        phi: the projection checkpoint (official format; required).
        backbone, pretrained: open_clip architecture and weights (see `model.build_clip`);
            the backbone defaults to `tiny-clip-toy` for the toy benchmark (the CLIP its
            world was made for; nothing to download), else ViT-B-32 (`resolve_eval`).
        quick_gelu: `--quick-gelu on|off` for a local checkpoint (None: from the weights).
        text_encoder: a text tower saved by `rtd train`; None keeps the CLIP's own.
        data_root: the benchmark folder in its official layout, or `hf`.
        prompt: `rtd` ("a photo of $ that {mod}" for every base) or `base` (each base
            repo's own prompt); None until resolved (`resolve_eval`).
        fiq_orders: FashionIQ caption joining: `both` orders averaged (SEARLE/LinCIR/RTD)
            or `single` (Pic2Word's "{c2} and {c1}"); None follows the prompt style.
        parts: FashionIQ categories or GeneCIS tasks (None: all).
        batch_size: images per encoding batch; text_batch_size: prompts per batch.
        workers: DataLoader workers for image decoding (None: on CUDA, every core of this
            process's share but one; on CPU, 0).
        decode: where JPEGs are decoded: `cpu` (PIL in the workers), `gpu` (torchvision's
            `decode_jpeg` on the CUDA device, tensor resize/crop; pixels within 1/255 of
            PIL's) or `auto` (gpu where available, else cpu).
        toy_queries: number of toy queries (their targets open the gallery).
        toy_distractors: random toy images added to the gallery (None: as many as queries).
        toy_seed: the toy world's data seed: it draws the queries, their targets and the
            distractors (the same seed scores the same benchmark in every run).
    """

    dataset: str | None = None
    base: str = "lincir"
    phi: Path | None = None
    backbone: str | None = None
    split: str | None = None
    pretrained: str | None = None
    quick_gelu: bool | None = None
    text_encoder: Path | None = None
    data_root: Path | None = None
    prompt: str | None = None
    fiq_orders: str | None = None
    parts: tuple[str, ...] | None = None
    batch_size: int = 128
    text_batch_size: int = 256
    workers: int | None = None
    decode: str = "cpu"
    toy_queries: int = TOY_EVAL_QUERIES
    toy_distractors: int | None = TOY_EVAL_DISTRACTORS
    toy_seed: int = 0


def validate_eval(cfg: EvalConfig) -> None:
    """Reject a bad `rtd eval` config before anything loads, naming the flag."""
    if cfg.dataset is None or cfg.phi is None:
        raise ConfigError("--dataset and --phi are required")
    if cfg.dataset not in DATASETS:
        raise unknown_name("--dataset", cfg.dataset, DATASETS)
    if cfg.base not in BASES:
        raise unknown_name("--base", cfg.base, BASES)
    if cfg.prompt is not None and cfg.prompt not in PROMPT_STYLES:
        raise unknown_name("--prompt", cfg.prompt, PROMPT_STYLES)
    if cfg.fiq_orders is not None and cfg.fiq_orders not in FIQ_ORDERS:
        raise unknown_name("--fiq-orders", cfg.fiq_orders, FIQ_ORDERS)
    if cfg.batch_size < 1 or cfg.text_batch_size < 1 or cfg.toy_queries < 1:
        raise ConfigError("--batch-size and --toy-queries must be positive")
    if cfg.toy_distractors is not None and cfg.toy_distractors < 0:
        raise ConfigError(f"--toy-distractors must be >= 0, got {cfg.toy_distractors}")
    if cfg.decode not in DECODES:
        raise unknown_name("--decode", cfg.decode, DECODES)
    if cfg.workers is not None and cfg.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {cfg.workers}")
    if cfg.toy_seed < 0:
        raise ConfigError(f"--toy-seed must be >= 0, got {cfg.toy_seed}")


def resolve_eval(overrides: Mapping[str, Any]) -> EvalConfig:
    """`EvalConfig`'s defaults < the flags given, validated; then the prompt style the
    text tower was trained with (or the base's) when `--prompt` is not given.

    Raises:
        ConfigError: a bad flag, or a `--text-encoder` file that is not a tower of `rtd train`.
    """
    cfg = resolve({"eval": EvalConfig()}, "eval", overrides, validate=validate_eval)
    if cfg.backbone is None:
        backbone = TOY_BACKBONE if cfg.dataset == "toy" else DEFAULT_BACKBONE
        cfg = dataclasses.replace(cfg, backbone=backbone)
    tower = read_text_tower_config(cfg.text_encoder) if cfg.text_encoder else None
    if cfg.prompt is None:
        cfg = dataclasses.replace(cfg, prompt=default_prompt_style(cfg.base, tower))
    return cfg


def default_prompt_style(base: str, tower_config: Mapping[str, Any] | None = None) -> str:
    """The prompt style `rtd eval` uses when `--prompt` is not given: the one the
    `--text-encoder` was trained with (`tower_config`, from `read_text_tower_config`),
    else the base's default, the one `rtd train` uses too (`projection.default_prompt_style`:
    `base` for Pic2Word's "a photo of * , {mod}", `rtd` for SEARLE/LinCIR)."""
    fallback = base_default_prompt(base)
    style = (tower_config or {}).get("prompt_style", fallback)
    return style if style in PROMPT_STYLES else fallback
