"""Where a CLIP's weights come from, and the activation they were trained with.

`labshared.clip.create_clip` builds the model; this module decides everything about its
weights first (`resolve_weights`): which kind they are (an open_clip tag, a local file, or
none), the local file to load (a tag's file from the cache, else downloaded now, with an
unreachable network one error within seconds: `labshared.offline.download_blocked`), and
the activation.

Why the activation comes from the weights: open_clip 3.x builds the MLP activation from the
*architecture* config only (`nn.GELU` for `ViT-B-32`), and when the weights' tag was
trained with QuickGELU (every OpenAI tag, LAION-400M ViT-B/32, MetaCLIP, DFN-2B) it merely
warns. Every feature is then silently off. Here:

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
4. `hf-hub:ORG/REPO` and `local-dir:PATH` backbones (`SCHEMAS`) carry their own
   `open_clip_config.json` (with `quick_gelu` where it applies); `quick_gelu=` overrides.
   The factory reads those; `dir_sha256` identifies a `local-dir:` folder's weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from labshared.config import unknown_name
from labshared.console import log
from labshared.errors import ConfigError
from labshared.offline import download_blocked, hub_endpoint
from labshared.runs import atomic_write_json

RANDOM = "random"  # weights: architecture only, random initialisation
SIDECAR_SUFFIX = ".clip.json"  # <checkpoint file name> + this: how to build that file's model
SIDECAR_FORMAT = "labshared-clip-weights/1"
SCHEMAS = ("hf-hub:", "local-dir:")  # backbones that bring their own config and weights
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True)
class WeightSource:
    """What `resolve_weights` decided about one (backbone, weights) pair.

    Attributes:
        kind: "tag", "file" or "random".
        shown: the tag in open_clip's own spelling, the file path, or `random`.
        checkpoint: the local file to load into the model; None for random weights or
            when `load_weights` was False.
        sha256: content digest of a local file ("file" only), else None.
        quick_gelu: True when the weights were trained with QuickGELU.
        quick_gelu_source: how that was decided (for the log and config.json).
        preprocess: a tag's mean, std, interpolation and resize mode (those it sets).
    """

    kind: str
    shown: str
    checkpoint: str | None
    sha256: str | None
    quick_gelu: bool
    quick_gelu_source: str
    preprocess: dict[str, Any] = field(default_factory=dict)


def resolve_weights(
    backbone: str,
    weights: str | None,
    *,
    quick_gelu: bool | None,
    own_config: bool,
    load_weights: bool,
    cache_dir: str | None,
    option_names: tuple[str, str],
) -> WeightSource:
    """Decide the kind, local file and activation of `backbone`'s `weights` (rules 1-3 of
    the module docstring; None is random), fetching a tag's file when `load_weights`.

    Args:
        own_config: `backbone` is one of labshared's own architectures (rule 2d).
        option_names: the CLI flags for backbone and weights, used in error messages.

    Raises:
        ConfigError: an unknown tag or missing file, weights not available offline, or a
            `quick_gelu` that contradicts a tag.
    """
    if weights is None:
        qg, source = _decide_random(backbone, quick_gelu)
        return WeightSource("random", RANDOM, None, None, qg, source)
    if tag_cfg := open_clip.get_pretrained_cfg(backbone, weights):
        shown = _canonical_tag(backbone, tag_cfg, weights)
        qg, source = _decide_tag(backbone, shown, quick_gelu, option_names[1])
        preprocess = {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg}
        checkpoint = None
        if load_weights:
            checkpoint = _fetch_tag(backbone, weights, qg, cache_dir, option_names)
        return WeightSource("tag", shown, checkpoint, None, qg, source, preprocess)
    if Path(weights).is_file():
        qg, source, sha256 = _decide_file(backbone, Path(weights), quick_gelu, own_config)
        checkpoint = weights if load_weights else None
        return WeightSource("file", weights, checkpoint, sha256, qg, source)
    raise _unknown_weights(backbone, weights, option_names)


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
    if weights is None or str(weights) == RANDOM or backbone.startswith(SCHEMAS):
        return None
    tag_cfg = open_clip.get_pretrained_cfg(backbone, str(weights))
    if not tag_cfg:
        return None
    return _fetch_tag(backbone, str(weights), tag_quick_gelu(backbone, str(weights)), cache_dir,
                      option_names)  # fmt: skip


# --------------------------------------------------------------------------- tags and digests
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


def dir_sha256(folder: Path) -> str:
    """One digest over the files open_clip may read from a `local-dir:` folder."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name == "open_clip_config.json" or path.suffix in CHECKPOINT_SUFFIXES:
            h.update(path.name.encode())
            h.update(file_sha256(path).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- the rules
def _canonical_tag(backbone: str, tag_cfg: dict[str, Any], given: str) -> str:
    """open_clip also accepts `LAION2B-S39B-B160K`; caches are keyed by its own spelling."""
    same = (t for t in known_tags(backbone) if open_clip.get_pretrained_cfg(backbone, t) == tag_cfg)
    return next(same, given)


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


def _decide_file(
    backbone: str, path: Path, quick_gelu: bool | None, own_config: bool
) -> tuple[bool, str, str]:
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
    if own_config:
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
    if any(sep in weights for sep in ("/", os.sep)) or weights.endswith(CHECKPOINT_SUFFIXES):
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


# --------------------------------------------------------------------------- fetching
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
            f"cannot be downloaded now ({blocked}); fetch {tag_source(cfg)} where there is "
            f"network (into the Hugging Face cache, or anywhere) and pass the file: {w_opt} "
            f"PATH --quick-gelu {'on' if qg else 'off'} (this tag's activation)"
        )
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # offline (HF_HUB_OFFLINE), no network, hub errors, bad checksum
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{b_opt} {backbone} {w_opt} {tag}: the weights are not in the local cache and "
            f"could not be downloaded ({reason[:300]}). Offline, fetch {tag_source(cfg)} "
            f"elsewhere and pass the file: {w_opt} PATH --quick-gelu {'on' if qg else 'off'} "
            "(this tag's activation)"
        ) from None
    if not path:
        raise ConfigError(f"{b_opt} {backbone} {w_opt} {tag}: open_clip has no source for it")
    return str(path)


def tag_source(tag_cfg: dict[str, Any]) -> str:
    """Where open_clip would download a tag's weights from, for a person to fetch by hand."""
    if hub := tag_cfg.get("hf_hub", ""):
        repo, name = os.path.split(hub)  # "org/repo/" names the repository's default file
        return f"{name or HF_SAFE_WEIGHTS_NAME} from the hub repository {repo}"
    return tag_cfg.get("url", "") or "the weights"
