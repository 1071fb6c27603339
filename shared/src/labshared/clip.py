"""One CLIP factory for every tool: (backbone, weights) -> model, eval transform, tokenizer,
and what identifies them (for cache keys and logs).

The weights are resolved first (`labshared.clip_weights`: an open_clip tag, a local file,
or none; the local file to load; the activation they were trained with, since open_clip
3.x builds it from the architecture config only), then the model is built with that
activation, the weights loaded, and the activation checked.

The tiny toy CLIP is an ordinary open_clip architecture registered from
`resources/model_configs/` when this module is imported, so this module needs nothing from
`labshared.tinyclip` (which reads its config from the same JSON and builds through here).

Deviation from open_clip's `create_model_and_transforms(name, pretrained=tag)`: the tag's
weights file is resolved first (`open_clip.download_pretrained`), so being offline is one
clear error, and the tag's preprocessing (mean, std, interpolation, resize mode) is passed
explicitly; the model, transform and checkpoint loading are open_clip's own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from labshared.clip_weights import RANDOM, SCHEMAS, dir_sha256, resolve_weights, tag_source
from labshared.config import unknown_name
from labshared.errors import ConfigError
from labshared.runs import torch_load_reason

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "resources" / "model_configs"


# --------------------------------------------------------------------------- own configs
def own_model_names() -> list[str]:
    """The architectures labshared ships as open_clip configs (e.g. `tiny-clip-toy`)."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def read_model_config(name: str) -> dict[str, Any]:
    """One of labshared's own architecture configs, as open_clip reads it."""
    path = MODEL_CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(
            f"{name!r} is not one of labshared's model configs ({', '.join(own_model_names())})"
        )
    return json.loads(path.read_text())


def register_model_configs() -> None:
    """Make labshared's own architectures known to open_clip (idempotent)."""
    if not set(own_model_names()) <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


register_model_configs()


# --------------------------------------------------------------------------- what was built
@dataclass(frozen=True)
class ClipInfo:
    """What identifies a built CLIP.

    Attributes:
        backbone: the open_clip architecture (or `hf-hub:` / `local-dir:` name).
        weights: the tag, the file path, `random`, or the schema name for hub/dir models.
        kind: "tag", "file", "random" or "schema".
        sha256: content digest of the weights file(s) ("file" and `local-dir:`), else None.
        quick_gelu: True when the towers use QuickGELU (x * sigmoid(1.702 x)).
        quick_gelu_source: how that was decided (for the log and config.json).
    """

    backbone: str
    weights: str
    kind: str
    sha256: str | None
    quick_gelu: bool
    quick_gelu_source: str

    def cache_identity(self) -> dict[str, Any]:
        """What a feature-cache key must hold: architecture, weights (tag or content digest,
        never a path, so a moved file still hits) and the activation."""
        weights: Any = self.weights
        if self.sha256 is not None:
            weights = {"sha256": self.sha256}
        return {"backbone": self.backbone, "weights": weights, "quick_gelu": self.quick_gelu}

    def describe(self) -> str:
        """One line for the log: backbone / weights (activation: how it was decided)."""
        act = "QuickGELU" if self.quick_gelu else "GELU"
        return f"{self.backbone} / {self.weights} ({act}: {self.quick_gelu_source})"


class ClipBundle(NamedTuple):
    """What `create_clip` returns: the model and everything that must agree with it."""

    model: nn.Module  # in eval mode, on the requested device
    preprocess: Any  # open_clip's eval transform: PIL image -> (3, H, W) float tensor
    tokenizer: Any  # open_clip tokenizer: list[str] -> (N, context_length) int64
    info: ClipInfo


# --------------------------------------------------------------------------- the factory
def create_clip(
    backbone: str,
    weights: str | Path | None = None,
    *,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
    load_weights: bool = True,
    cache_dir: str | None = None,
    option_names: tuple[str, str] = ("backbone", "weights"),
) -> ClipBundle:
    """Build a CLIP, its eval transform and tokenizer, with the activation its weights need.

    Args:
        backbone: an open_clip architecture (`ViT-B-32`, `ViT-L-14`, `ViT-H-14`,
            `ViT-bigG-14`, `tiny-clip-toy`, ...) or `hf-hub:ORG/REPO` / `local-dir:PATH`.
        weights: an open_clip tag of `backbone`, a local checkpoint file, or `random` / None
            for random initialisation (must be None or `random` with a schema backbone).
        quick_gelu: force QuickGELU (True) or GELU (False); None decides from the weights
            (`labshared.clip_weights`). Contradicting a tag is refused.
        device: where the model goes (returned in eval mode). `meta` builds the module tree
            without memory (no weights can be loaded then).
        load_weights: False builds exactly what the weights would get (activation,
            transform, tokenizer) without fetching or loading them.
        cache_dir: open_clip's download cache (default: its own).
        option_names: the CLI flags for backbone and weights, used in error messages
            (rtd: `--backbone`/`--pretrained`, tldr: `--clip-model`/`--clip-pretrained`).

    Returns:
        ClipBundle(model, preprocess, tokenizer, info).

    Raises:
        ConfigError: unknown backbone (with the known ones and the closest), unknown tag
            (with the tags open_clip knows for that backbone), weights not available offline,
            a file that is not a checkpoint of `backbone`, or a contradicting `quick_gelu`.
    """
    b_opt, w_opt = option_names
    weights = None if weights is None else str(weights)
    if weights == RANDOM:
        weights = None
    if backbone.startswith(SCHEMAS):
        if weights is not None:
            raise ConfigError(
                f"{b_opt} {backbone} brings its own weights; drop {w_opt} {weights} "
                f"(or pass 'random' / nothing)"
            )
        return _create_from_schema(backbone, quick_gelu, device, load_weights, cache_dir, b_opt)
    _check_backbone(backbone, b_opt)
    src = resolve_weights(
        backbone,
        weights,
        quick_gelu=quick_gelu,
        own_config=backbone in own_model_names(),
        load_weights=load_weights,
        cache_dir=cache_dir,
        option_names=option_names,
    )
    if src.checkpoint is not None and torch.device(device).type == "meta":
        raise ValueError("device='meta' holds no values: pass load_weights=False")

    qg = src.quick_gelu
    with _quiet_random_init_warning(), _construction_device(device):
        model, _, preprocess = open_clip.create_model_and_transforms(
            backbone,
            pretrained=None,
            device=device,
            force_quick_gelu=qg,  # sets the config's flag: no open_clip mismatch warning
            image_mean=src.preprocess.get("mean"),
            image_std=src.preprocess.get("std"),
            image_interpolation=src.preprocess.get("interpolation"),
            image_resize_mode=src.preprocess.get("resize_mode"),
            quick_gelu=qg,  # constructor keyword: also turns a `-quickgelu` config off
        )
    if src.checkpoint is not None:
        _load_checkpoint(model, src.checkpoint, backbone, src.kind, option_names)
    _check_activation(model, qg, backbone)
    info = ClipInfo(backbone, src.shown, src.kind, src.sha256, qg, src.quick_gelu_source)
    return ClipBundle(model.eval(), preprocess, open_clip.get_tokenizer(backbone), info)


def _check_backbone(backbone: str, b_opt: str) -> None:
    known = open_clip.list_models()
    if backbone in known:
        return
    err = unknown_name(b_opt, backbone, known)
    raise ConfigError(f"{err} (open_clip architectures; also hf-hub:ORG/REPO, local-dir:PATH)")


def _is_torchscript(path: str) -> bool:
    """OpenAI's own release files are TorchScript archives (zip with `code/` entries)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _load_checkpoint(
    model: nn.Module, path: str, backbone: str, kind: str, option_names: tuple[str, str]
) -> None:
    if _is_torchscript(path):
        openai = open_clip.get_pretrained_cfg(backbone, "openai")
        hint = f" ({tag_source(openai)}, with --quick-gelu on)" if openai else ""
        raise ConfigError(
            f"{option_names[1]} {path}: a TorchScript archive (OpenAI's release format), which "
            "is not loaded here (weights_only loading only); use the same weights as an "
            f"open_clip state dict{hint}"
        )
    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except Exception as exc:  # unpickling, safetensors header, missing/unexpected keys, shapes
        what = option_names[1] if kind == "file" else f"cached weights of {option_names[1]}"
        raise ConfigError(
            f"{what} {path}: not a loadable open_clip checkpoint of {backbone} "
            f"({torch_load_reason(exc)}); expected an open_clip state dict (.safetensors, "
            ".pt, .bin)"
        ) from None


def _create_from_schema(
    backbone: str,
    quick_gelu: bool | None,
    device: str | torch.device,
    load_weights: bool,
    cache_dir: str | None,
    b_opt: str,
) -> ClipBundle:
    """`hf-hub:` / `local-dir:`: config and weights come from the repo or folder."""
    try:
        cfg = open_clip.get_model_config(backbone) or {}
    except Exception as exc:  # hub offline without a cached config, unreadable folder
        raise ConfigError(
            f"{b_opt} {backbone}: cannot read its open_clip_config.json ({exc}); offline, "
            "download the repository and pass local-dir:PATH"
        ) from None
    shipped = bool(cfg.get("quick_gelu", False))
    qg = shipped if quick_gelu is None else quick_gelu
    source = "given (--quick-gelu)" if quick_gelu is not None else "the repository's config"
    kwargs: dict[str, Any] = {"force_quick_gelu": qg, "quick_gelu": qg}
    try:
        with _quiet_random_init_warning(), _construction_device(device):
            model, _, preprocess = open_clip.create_model_and_transforms(
                backbone, device=device, load_weights=load_weights, cache_dir=cache_dir, **kwargs
            )
    except (RuntimeError, OSError, ValueError) as exc:
        raise ConfigError(f"{b_opt} {backbone}: cannot build or load it ({exc})") from None
    _check_activation(model, qg, backbone)
    sha256 = None
    if backbone.startswith("local-dir:"):
        sha256 = dir_sha256(Path(backbone.removeprefix("local-dir:")))
    info = ClipInfo(backbone, backbone, "schema", sha256, qg, source)
    return ClipBundle(model.eval(), preprocess, open_clip.get_tokenizer(backbone), info)


# --------------------------------------------------------------------------- helpers
def activation_classes(model: nn.Module) -> set[type]:
    """The GELU-family activation classes in a model's open_clip towers."""
    return {type(m) for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU))}


def _check_activation(model: nn.Module, quick_gelu: bool, backbone: str) -> None:
    """Internal invariant: the built towers use the activation decided above (guards against
    an open_clip release that stops honouring the flag). timm / HF towers have their own."""
    found = activation_classes(model)
    if not found:
        return
    wrong = nn.GELU if quick_gelu else QuickGELU
    if wrong in found:
        raise RuntimeError(
            f"{backbone}: asked open_clip for quick_gelu={quick_gelu} but the model has "
            f"{sorted(c.__name__ for c in found)} activations"
        )


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning():
    """open_clip warns "No pretrained weights loaded ... initialized randomly" whenever
    `pretrained` is None; here weights are loaded right after, or random on purpose."""
    root = logging.getLogger()
    notice = _DropRandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def _construction_device(device: str | torch.device):
    """Build directly on `meta` (module tree only, no memory); elsewhere open_clip builds on
    the CPU and moves the model, which keeps random initialisation device-independent."""
    if torch.device(device).type == "meta":
        return torch.device("meta")
    return contextlib.nullcontext()
