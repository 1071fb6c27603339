"""One CLIP factory for every tool: (backbone, weights) -> model, eval transform, tokenizer,
and what identifies them (for cache keys and logs).

Why it exists: open_clip 3.x builds the MLP activation from the *architecture* config only
(`nn.GELU` for `ViT-B-32`), and when the weights' tag was trained with QuickGELU (every
OpenAI tag, LAION-400M ViT-B/32, MetaCLIP, DFN-2B) it merely warns. Every feature is then
silently off. Here the activation comes from the weights:

1. An open_clip tag (`openai`, `laion2b_s39b_b160k`, ...): the tag's pretrained config,
   `open_clip.get_pretrained_cfg(backbone, tag)["quick_gelu"]`. An architecture whose own
   config already sets `quick_gelu` (the `-quickgelu` names, `roberta-ViT-B-32`) keeps it,
   as open_clip's trainer built those weights from that config. A `quick_gelu=` argument
   that contradicts a tag is refused.
2. A local checkpoint file, in this order:
   a. the `quick_gelu=` argument (`--quick-gelu on|off` in rtd and tldr);
   b. the JSON sidecar `<file>.clip.json` (`SIDECAR_SUFFIX`), written by `write_sidecar`;
   c. a file whose SHA-256 matches a checksum open_clip publishes for a tag (its release
      URLs, e.g. `vit_b_32-quickgelu-laion400m_e32-46683a32.pt`) takes that tag's
      activation (OpenAI's own `.pt` files are TorchScript archives, which weights-only
      loading refuses; the error names the hub file with the same weights);
   d. labshared's own architectures (`resources/model_configs/*.json`, e.g. the tiny toy
      CLIP) keep their config's: their weights are only ever fitted from that config;
   e. otherwise the architecture config's default (QuickGELU only for `-quickgelu` names),
      with a warning in the log naming the flag and the sidecar.
   What a, c decide is recorded in the sidecar (when its folder is writable), so the next
   run without the flag loads the file the same way.
3. `random` (or None): no weights; the `quick_gelu=` argument or the architecture default.
4. `hf-hub:ORG/REPO` and `local-dir:PATH` backbones carry their own `open_clip_config.json`
   (with `quick_gelu` where it applies); `quick_gelu=` overrides.

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
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.transformer import QuickGELU
from torch import nn

from labshared.config import unknown_name
from labshared.console import log
from labshared.errors import ConfigError
from labshared.offline import download_blocked, hub_endpoint
from labshared.runs import atomic_write_json, torch_load_reason

RANDOM = "random"  # weights: architecture only, random initialisation
SIDECAR_SUFFIX = ".clip.json"  # <checkpoint file name> + this: how to build that file's model
SIDECAR_FORMAT = "labshared-clip-weights/1"
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "resources" / "model_configs"
_SCHEMAS = ("hf-hub:", "local-dir:")
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")


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


# --------------------------------------------------------------------------- decisions
def tag_quick_gelu(backbone: str, tag: str) -> bool:
    """The activation the weights `backbone`/`tag` were trained with (rule 1 above)."""
    cfg = open_clip.get_pretrained_cfg(backbone, tag)
    return bool(cfg.get("quick_gelu", False)) or architecture_quick_gelu(backbone)


def architecture_quick_gelu(backbone: str) -> bool:
    """The architecture config's own `quick_gelu` (True only for `-quickgelu` variants and a
    few others); what open_clip builds when nothing says otherwise."""
    cfg = open_clip.get_model_config(backbone) or {}
    return bool(cfg.get("quick_gelu", False))


def known_tags(backbone: str) -> list[str]:
    """The pretrained tags open_clip lists for `backbone` (empty for an unknown one)."""
    return list(open_clip.list_pretrained_tags_by_model(backbone))


def _published_digests() -> Iterator[tuple[str, str, str]]:
    """(backbone, tag, sha256 or its prefix) for every tag whose URL carries its checksum,
    read the way `open_clip.pretrained.download_pretrained_from_url` reads it."""
    for backbone, tag in open_clip.list_pretrained():
        url = open_clip.get_pretrained_cfg(backbone, tag).get("url", "")
        if "openaipublic" in url:
            yield backbone, tag, url.split("/")[-2]
        elif "mlfoundations" in url:
            yield backbone, tag, os.path.splitext(os.path.basename(url))[0].split("-")[-1]


def tag_for_digest(backbone: str, sha256: str) -> str | None:
    """The open_clip tag of `backbone` (or its `-quickgelu` twin) whose published checksum
    matches a file's SHA-256, or None."""
    plain = backbone.removesuffix("-quickgelu")
    for name, tag, digest in _published_digests():
        if name in (plain, plain + "-quickgelu") and len(digest) >= 8 and sha256.startswith(digest):
            return tag
    return None


# --------------------------------------------------------------------------- sidecars
def sidecar_path(weights_file: str | Path) -> Path:
    """`<weights file>.clip.json`: where the file's activation is recorded."""
    path = Path(weights_file)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(weights_file: str | Path) -> dict[str, Any] | None:
    """The activation record beside a weights file, or None when there is none.

    Raises:
        ConfigError: the sidecar is not JSON or its `quick_gelu` is not true/false.
    """
    side = sidecar_path(weights_file)
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text())
    except ValueError as exc:
        raise ConfigError(f"{side}: not valid JSON ({exc}); delete it or fix it") from None
    if not isinstance(record, dict) or not isinstance(record.get("quick_gelu"), bool):
        raise ConfigError(
            f"{side}: field 'quick_gelu' must be true or false (how the weights in "
            f"{Path(weights_file).name} were trained); delete the file or fix the field"
        )
    return record


def write_sidecar(
    weights_file: str | Path, *, backbone: str, quick_gelu: bool, sha256: str, source: str
) -> Path:
    """Record beside `weights_file` how to build its model (atomically)."""
    st = Path(weights_file).stat()
    record = {
        "format": SIDECAR_FORMAT,
        "backbone": backbone,
        "quick_gelu": quick_gelu,
        "sha256": sha256,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "source": source,
    }
    return atomic_write_json(sidecar_path(weights_file), record)


def file_sha256(path: str | Path, record: dict[str, Any] | None = None) -> str:
    """SHA-256 of a file; reuses the sidecar's digest when size and mtime still match."""
    st = Path(path).stat()
    if (
        record
        and isinstance(record.get("sha256"), str)
        and record.get("size") == st.st_size
        and record.get("mtime_ns") == st.st_mtime_ns
    ):
        return record["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dir_sha256(folder: Path) -> str:
    """One digest over the files open_clip may read from a `local-dir:` folder."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name == "open_clip_config.json" or path.suffix in _CHECKPOINT_SUFFIXES:
            h.update(path.name.encode())
            h.update(file_sha256(path).encode())
    return h.hexdigest()


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
            (module docstring). Contradicting a tag is refused.
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
    if backbone.startswith(_SCHEMAS):
        if weights is not None:
            raise ConfigError(
                f"{b_opt} {backbone} brings its own weights; drop {w_opt} {weights} "
                f"(or pass 'random' / nothing)"
            )
        return _create_from_schema(backbone, quick_gelu, device, load_weights, cache_dir, b_opt)
    _check_backbone(backbone, b_opt)

    preprocess_cfg: dict[str, Any] = {}
    checkpoint: str | None = None
    sha256: str | None = None
    if weights is None:
        kind, shown = "random", RANDOM
        qg, source = _decide_random(backbone, quick_gelu)
    elif tag_cfg := open_clip.get_pretrained_cfg(backbone, weights):
        kind, shown = "tag", _canonical_tag(backbone, tag_cfg, weights)
        qg, source = _decide_tag(backbone, shown, quick_gelu, w_opt)
        preprocess_cfg = {
            k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
        }
        if load_weights:
            checkpoint = _fetch_tag(backbone, weights, qg, cache_dir, option_names)
    elif Path(weights).is_file():
        kind, shown = "file", weights
        checkpoint = weights if load_weights else None
        qg, source, sha256 = _decide_file(backbone, Path(weights), quick_gelu)
    else:
        raise _unknown_weights(backbone, weights, option_names)
    if checkpoint is not None and torch.device(device).type == "meta":
        raise ValueError("device='meta' holds no values: pass load_weights=False")

    with _quiet_random_init_warning(), _construction_device(device):
        model, _, preprocess = open_clip.create_model_and_transforms(
            backbone,
            pretrained=None,
            device=device,
            force_quick_gelu=qg,  # sets the config's flag: no open_clip mismatch warning
            image_mean=preprocess_cfg.get("mean"),
            image_std=preprocess_cfg.get("std"),
            image_interpolation=preprocess_cfg.get("interpolation"),
            image_resize_mode=preprocess_cfg.get("resize_mode"),
            quick_gelu=qg,  # constructor keyword: also turns a `-quickgelu` config off
        )
    if checkpoint is not None:
        _load_checkpoint(model, checkpoint, backbone, kind, option_names)
    _check_activation(model, qg, backbone)
    info = ClipInfo(backbone, shown, kind, sha256, qg, source)
    return ClipBundle(model.eval(), preprocess, open_clip.get_tokenizer(backbone), info)


def _canonical_tag(backbone: str, tag_cfg: dict[str, Any], given: str) -> str:
    """open_clip also accepts `LAION2B-S39B-B160K`; caches are keyed by its own spelling."""
    same = (t for t in known_tags(backbone) if open_clip.get_pretrained_cfg(backbone, t) == tag_cfg)
    return next(same, given)


def _check_backbone(backbone: str, b_opt: str) -> None:
    known = open_clip.list_models()
    if backbone in known:
        return
    err = unknown_name(b_opt, backbone, known)
    raise ConfigError(f"{err} (open_clip architectures; also hf-hub:ORG/REPO, local-dir:PATH)")


def _decide_random(backbone: str, quick_gelu: bool | None) -> tuple[bool, str]:
    if quick_gelu is not None:
        return quick_gelu, "given"
    return architecture_quick_gelu(backbone), "architecture default (random weights)"


def _decide_tag(backbone: str, tag: str, quick_gelu: bool | None, w_opt: str) -> tuple[bool, str]:
    trained = tag_quick_gelu(backbone, tag)
    if quick_gelu is not None and quick_gelu != trained:
        act = "QuickGELU" if trained else "GELU"
        raise ConfigError(
            f"{w_opt} {tag}: these {backbone} weights were trained with {act}; "
            f"--quick-gelu {'on' if quick_gelu else 'off'} would build the wrong model "
            f"(drop --quick-gelu for open_clip tags)"
        )
    return trained, f"pretrained config of tag {tag!r}"


def _decide_file(backbone: str, path: Path, quick_gelu: bool | None) -> tuple[bool, str, str]:
    """Rule 2 of the module docstring: (quick_gelu, how decided, file SHA-256)."""
    record = read_sidecar(path)
    sha256 = file_sha256(path, record)
    side = sidecar_path(path)
    if record is not None and record.get("sha256") not in (None, sha256):
        log(
            f"[yellow]warning:[/yellow] {side} records a different file (SHA-256 "
            f"{str(record['sha256'])[:12]}..., this one {sha256[:12]}...); ignoring it"
        )
        record = None
    if record is not None and record.get("backbone") not in (None, backbone):
        log(
            f"[yellow]warning:[/yellow] {side} was recorded for backbone "
            f"{record['backbone']!r}, not {backbone!r}"
        )
    if quick_gelu is not None:
        if record is not None and record["quick_gelu"] != quick_gelu:
            log(
                f"[yellow]warning:[/yellow] --quick-gelu {'on' if quick_gelu else 'off'} "
                f"overrides {side} (quick_gelu={str(record['quick_gelu']).lower()}); edit "
                "or delete that file to change the record"
            )
        elif record is None:
            _record(path, backbone, quick_gelu, sha256, "given (--quick-gelu)")
        return quick_gelu, "given (--quick-gelu)", sha256
    if record is not None:
        return record["quick_gelu"], f"sidecar {side.name}", sha256
    if (tag := tag_for_digest(backbone, sha256)) is not None:
        qg = tag_quick_gelu(backbone, tag)
        source = f"file checksum matches open_clip tag {tag!r}"
        _record(path, backbone, qg, sha256, source)
        return qg, source, sha256
    qg = architecture_quick_gelu(backbone)
    if backbone in own_model_names():
        return qg, "labshared architecture config", sha256
    log(
        f"[yellow]warning:[/yellow] {path}: no activation recorded (no {side.name}, no "
        f"--quick-gelu); using {backbone}'s architecture default, "
        f"{'QuickGELU' if qg else 'GELU'}. OpenAI-trained weights need --quick-gelu on"
    )
    return qg, "architecture default (nothing recorded)", sha256


def _record(path: Path, backbone: str, qg: bool, sha256: str, source: str) -> None:
    try:
        side = write_sidecar(path, backbone=backbone, quick_gelu=qg, sha256=sha256, source=source)
    except OSError as exc:  # a read-only weights folder: the build still works
        log(f"[dim]could not record the activation beside {path} ({exc})[/dim]")
        return
    log(f"[dim]recorded quick_gelu={str(qg).lower()} in {side}[/dim]")


def _unknown_weights(backbone: str, weights: str, option_names: tuple[str, str]) -> ConfigError:
    b_opt, w_opt = option_names
    if any(sep in weights for sep in ("/", os.sep)) or weights.endswith(_CHECKPOINT_SUFFIXES):
        what = "is a folder" if Path(weights).is_dir() else "does not exist"
        return ConfigError(f"{w_opt} {weights}: {what}; expected a checkpoint file of {backbone}")
    tags = known_tags(backbone)
    if not tags:
        return ConfigError(
            f"{w_opt} {weights!r}: open_clip knows no weight tags for {b_opt} {backbone}; "
            f"pass a local checkpoint file or '{RANDOM}'"
        )
    err = unknown_name(w_opt, weights, tags)
    return ConfigError(
        f"{err} (the open_clip tags of {backbone}; or a local checkpoint file, or '{RANDOM}')"
    )


def fetch_weights(
    backbone: str,
    weights: str | Path | None,
    *,
    cache_dir: str | None = None,
    option_names: tuple[str, str] = ("backbone", "weights"),
) -> str | None:
    """The local file of `backbone`'s open_clip tag `weights` (from the cache, else
    downloaded now), for a check before a run folder is made; None for a local file,
    `random` or a schema backbone (nothing to download).

    Raises:
        ConfigError: within seconds when the weights are not cached and cannot be
            downloaded (offline, no network): one line naming the file and its source.
    """
    if weights is None or str(weights) == RANDOM or backbone.startswith(_SCHEMAS):
        return None
    tag_cfg = open_clip.get_pretrained_cfg(backbone, str(weights))
    if not tag_cfg:
        return None
    return _fetch_tag(backbone, str(weights), tag_quick_gelu(backbone, str(weights)), cache_dir,
                      option_names)  # fmt: skip


def _cached_tag_file(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """Where `open_clip.download_pretrained` keeps a tag's file, if it is there already
    (the hub's cache, or open_clip's URL cache), found without any network call."""
    if hub := tag_cfg.get("hf_hub", ""):
        repo, name = os.path.split(hub)
        name = name or HF_WEIGHTS_NAME
        # open_clip prefers a .safetensors twin of the named file
        twins = [HF_SAFE_WEIGHTS_NAME] if name == HF_WEIGHTS_NAME else []
        if name.endswith((".bin", ".pth")):
            twins.append(name.rsplit(".", 1)[0] + ".safetensors")
        for candidate in (*twins, name):
            found = try_to_load_from_cache(repo, candidate, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
        return None
    if url := tag_cfg.get("url", ""):
        path = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)
        return str(path) if path.is_file() else None
    return None


def _fetch_tag(
    backbone: str, tag: str, qg: bool, cache_dir: str | None, option_names: tuple[str, str]
) -> str:
    """The local path of a tag's weights, downloading them if allowed (and possible: an
    unreachable network is one error within seconds, not a minute of retries)."""
    b_opt, w_opt = option_names
    cfg = open_clip.get_pretrained_cfg(backbone, tag)
    if cached := _cached_tag_file(cfg, cache_dir):
        return cached
    hub = bool(cfg.get("hf_hub")) and open_clip.pretrained.has_hf_hub()
    if blocked := download_blocked(hub_endpoint() if hub else cfg.get("url", ""), hub=hub):
        raise ConfigError(
            f"{b_opt} {backbone} {w_opt} {tag}: the weights are not in the local cache and "
            f"cannot be downloaded now ({blocked}); fetch {_source(cfg)} where there is "
            f"network (into the Hugging Face cache, or anywhere) and pass the file: {w_opt} "
            f"PATH --quick-gelu {'on' if qg else 'off'} (this tag's activation)"
        )
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # offline (HF_HUB_OFFLINE), no network, hub errors, bad checksum
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{b_opt} {backbone} {w_opt} {tag}: the weights are not in the local cache and "
            f"could not be downloaded ({reason[:300]}). Offline, fetch {_source(cfg)} "
            f"elsewhere and pass the file: {w_opt} PATH --quick-gelu {'on' if qg else 'off'} "
            "(this tag's activation)"
        ) from None
    if not path:
        raise ConfigError(f"{b_opt} {backbone} {w_opt} {tag}: open_clip has no source for it")
    return str(path)


def _source(tag_cfg: dict[str, Any]) -> str:
    """Where open_clip would download a tag's weights from, for a person to fetch by hand."""
    if hub := tag_cfg.get("hf_hub", ""):
        repo, name = os.path.split(hub)  # "org/repo/" names the repository's default file
        return f"{name or HF_SAFE_WEIGHTS_NAME} from the hub repository {repo}"
    return tag_cfg.get("url", "") or "the weights"


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
        hint = f" ({_source(openai)}, with --quick-gelu on)" if openai else ""
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
        sha256 = _dir_sha256(Path(backbone.removeprefix("local-dir:")))
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
