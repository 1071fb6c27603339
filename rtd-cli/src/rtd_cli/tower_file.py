"""The file of an RTD-trained text tower: what `rtd train` writes and `rtd eval
--text-encoder` reads.

A safetensors file of the trained tensors (all, or those `--train-layers` chose; the rest
come back from the base CLIP at load time) whose metadata `rtd` holds the config that
rebuilds and uses the tower (backbone, pretrained, base, prompt and its style, step), with
the same record in a JSON sidecar (`<file>.json`) for people.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from labshared.errors import ConfigError
from labshared.runs import atomic_save_safetensors, atomic_write_json, read_safetensors, to_jsonable
from rtd_cli.model import TextTower, text_tower_from_clip

TEXT_TOWER_FORMAT = "rtd-text-tower/1"
#: What `--text-encoder` must name, for error messages.
EXPECTED = (
    "a text tower written by `rtd train` (text_tower.safetensors, or the run folder holding it)"
)


def save_text_tower(
    path: str | Path,
    tower: TextTower,
    config: Mapping[str, Any],
    params: Iterable[str] | None = None,
) -> Path:
    """Save a text tower as safetensors plus a JSON sidecar (`<path>.json`).

    Args:
        path: the `.safetensors` file to write (atomically).
        tower: the (trained) tower.
        config: what rebuilds it: at least `backbone` and `pretrained`; anything else
            (base, step, trained layers) is kept.
        params: names of the tensors to store (default: all); unstored ones come back from
            the base CLIP at load time, so a partial fine-tune stays small.

    Returns:
        The path written.
    """
    path = Path(path)
    for key in ("backbone", "pretrained"):
        if key not in config:
            raise ConfigError(
                f"save_text_tower: config lacks {key!r} (needed to rebuild the tower)"
            )
    state = tower.state_dict()
    names = list(state) if params is None else list(params)
    unknown = sorted(set(names) - set(state))
    if unknown:
        raise ConfigError(f"save_text_tower: no such tower parameters: {unknown[:5]}")
    meta = {
        "format": TEXT_TOWER_FORMAT,
        "config": to_jsonable(dict(config)),
        "params": names,
        "shapes": {n: list(state[n].shape) for n in names},
    }
    atomic_save_safetensors(path, {n: state[n] for n in names}, {"rtd": json.dumps(meta)})
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


def tower_file(path: str | Path) -> Path:
    """The safetensors file of `--text-encoder`: the file itself, or the one a run folder
    holds (`text_tower.safetensors`, else `model.safetensors`)."""
    path = Path(path)
    if path.is_dir():
        for name in ("text_tower.safetensors", "model.safetensors"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(
            f"--text-encoder {path}: the folder holds no text_tower.safetensors or "
            f"model.safetensors; expected {EXPECTED}"
        )
    return path


def read_tower(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, config) of a tower file or of the run folder holding one; the config is
    `{}` for a plain safetensors state dict without `rtd` metadata.

    The whole file is read, so that a missing, truncated, corrupt or non-safetensors file
    is one `ConfigError` naming it and the expected format.
    """
    file = tower_file(path)
    tensors, metadata = read_safetensors(file, flag="--text-encoder", expected=EXPECTED)
    if "rtd" not in metadata:
        return tensors, {}
    try:
        return tensors, dict(json.loads(metadata["rtd"])["config"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"--text-encoder {file}: its 'rtd' metadata holds no readable config; expected "
            f"{EXPECTED}"
        ) from None


def read_text_tower_config(path: str | Path) -> dict[str, Any]:
    """The config `rtd train` saved with a tower (`backbone`, `prompt_style`, `step`, ...),
    `{}` without one; the file is read whole (see `read_tower`)."""
    return read_tower(path)[1]


def load_text_tower(
    path: str | Path, clip_model: nn.Module, backbone: str | None = None
) -> TextTower:
    """Rebuild a saved text tower on top of `clip_model`'s text side.

    Args:
        path: a file from `save_text_tower`, or a folder holding one.
        clip_model: the base CLIP; tensors absent from the file keep its values.
        backbone: if given, must equal the backbone the tower was trained from.

    Raises:
        ConfigError: an unreadable file, a wrong backbone, unknown tensor names or
            mismatched shapes.
    """
    file = tower_file(path)
    saved, config = read_tower(file)
    if backbone is not None and config.get("backbone") not in (None, backbone):
        raise ConfigError(
            f"--text-encoder {file} was trained from backbone {config['backbone']!r}, "
            f"but --backbone is {backbone!r}"
        )
    tower = text_tower_from_clip(clip_model)
    own = tower.state_dict()
    unknown = sorted(set(saved) - set(own))
    bad = {
        k: (tuple(v.shape), tuple(own[k].shape))
        for k, v in saved.items()
        if k in own and v.shape != own[k].shape
    }
    if unknown or bad:
        raise ConfigError(
            f"--text-encoder {file} does not fit this backbone: unknown tensors {unknown[:5]}, "
            f"shape mismatches (found, expected) {dict(list(bad.items())[:5])}"
        )
    tower.load_state_dict(saved, strict=False)
    device = next(clip_model.parameters()).device
    return tower.to(device).eval()
