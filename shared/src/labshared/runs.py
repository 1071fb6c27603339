"""Run folders, resolved configs, metrics and atomic, resumable checkpoints.

Layout of one run (every command of every tool)::

    runs/<tool>/<command>/<YYYYmmdd-HHMMSS>/   (or --output-dir)
        config.json        resolved config + versions, device, seed (never secrets)
        metrics.json       final metrics
        log.txt            optional text log
        checkpoints/step-00000100/{model.safetensors, state.pt, meta.json}
        figures/

Every file is written to a temporary name and renamed into place, and a checkpoint is a
whole folder renamed at once, so an interruption leaves the previous one intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from labshared.errors import ConfigError

# Keys whose values may be credentials. "token" but not "tokens" / "tokenizer": a count or
# limit of tokens (an LLM's max_tokens) and a tokenizer name are settings to record.
SECRET_PATTERN = re.compile(
    r"(api[_-]?key|token(?!s|izer)|secret|password|authorization)", re.IGNORECASE
)
CHECKPOINT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step-(\d+)$")


# --------------------------------------------------------------------------- atomic I/O
def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` then rename tmp onto `path`; on any error the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns `path`."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` (through `to_jsonable`) as indented JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Save tensors as safetensors atomically (clones, so tied or non-contiguous tensors work)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=meta))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """For optimizer/scheduler state only (tensors and plain containers): read back with
    `torch.load(weights_only=True)`, never plain pickle."""
    return atomic_write(path, lambda p: torch.save(obj, p))


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load` restricted to tensors and plain containers (weights_only=True)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def read_torch_file(
    path: str | Path, *, flag: str, expected: str, map_location: str | torch.device = "cpu"
) -> Any:
    """`safe_torch_load` for a file the user named: any failure is one `ConfigError`.

    A missing file, a folder, a truncated or corrupt file, or a pickle that needs more than
    tensors and plain containers all become "<flag> <path>: <what is wrong>; expected
    <expected>", so the CLI prints one red line instead of an unpickler traceback.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{flag} {path}: {what}; expected {expected}")
    try:
        return safe_torch_load(path, map_location=map_location)
    except Exception as exc:  # any unreadable file: zip, pickle or tensor-storage errors
        raise ConfigError(
            f"{flag} {path}: not a readable torch checkpoint ({torch_load_reason(exc)}); "
            f"expected {expected}"
        ) from None


_UNSAFE_ADVICE = re.compile(r"weights_only\W*(=|set to)\W*False", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def torch_load_reason(exc: BaseException) -> str:
    """Why a weights-only `torch.load` failed, in a few words, without torch's advice to
    retry with `weights_only=False` (which runs whatever code the file holds: never
    something to suggest for a file of unknown origin)."""
    text = _ANSI.sub("", str(exc)).strip()
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return (
            f"it pickles a Python object ({found.group(1)}); only tensors and plain "
            "containers are loaded, never code"
        )
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        operand = re.search(r"Unsupported operand \d+", text)
        detail = f": {operand.group(0).lower()}" if operand else ""
        return f"not a pickle of tensors and plain containers as torch.save writes{detail}"
    reason = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
    if _UNSAFE_ADVICE.search(reason):
        return type(exc).__name__
    return reason[:200]


def read_safetensors(
    path: str | Path, *, flag: str, expected: str, device: str = "cpu", header_only: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, metadata) of a safetensors file the user named; failures are one
    `ConfigError` naming the flag, the file and the expected format.

    With `header_only`, {name: shape tuple} instead of tensors: nothing but the header is
    read (safetensors still checks that the data covers the whole file, so a truncated
    file fails here too), for checks before a run folder is made.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{flag} {path}: {what}; expected {expected}")
    try:
        with safe_open(str(path), framework="pt", device=device) as handle:
            metadata = dict(handle.metadata() or {})
            if header_only:
                tensors = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
            else:
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # header too large, invalid JSON header, truncated data, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{flag} {path}: not a readable safetensors file ({reason[:200]}); expected {expected}"
        ) from None
    return tensors, metadata


# --------------------------------------------------------------------------- JSON helpers
def to_jsonable(obj: Any) -> Any:
    """Dataclasses, Paths, tensors, numpy scalars and enums -> plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if hasattr(obj, "value") and obj.__class__.__module__ != "builtins":  # enums
        return obj.value
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    return obj


def scrub_secrets(obj: Any) -> Any:
    """Drop every key that looks like a credential (api_key, token, secret, ...)."""
    if isinstance(obj, Mapping):
        return {k: scrub_secrets(v) for k, v in obj.items() if not SECRET_PATTERN.search(str(k))}
    if isinstance(obj, list):
        return [scrub_secrets(v) for v in obj]
    return obj


def _git(args: list[str], cwd: str | Path | None) -> subprocess.CompletedProcess | None:
    """`git <args>` in the checkout holding `cwd` (default: this package); None without git."""
    try:
        return subprocess.run(["git", *args], cwd=cwd or Path(__file__).parent,
                              capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The short commit hash of the checkout holding `cwd` (default: this package), or
    None outside a git checkout or without git."""
    out = _git(["rev-parse", "--short", "HEAD"], cwd)
    return (out.stdout.strip() or None) if out is not None else None


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether the checkout holding `cwd` (default: this package) has uncommitted changes
    to tracked files, or None outside a git checkout or without git."""
    out = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    if out is None or out.returncode != 0:
        return None
    return bool(out.stdout.strip())


# --------------------------------------------------------------------------- run folders
def default_run_dir(tool: str, command: str, root: str | Path = "runs") -> Path:
    """`<root>/<tool>/<command>/<YYYYmmdd-HHMMSS>` (not created)."""
    return Path(root) / tool / command / time.strftime("%Y%m%d-%H%M%S")


def write_metrics(
    run_dir: str | Path, metrics: Mapping[str, Any], name: str = "metrics.json"
) -> Path:
    """Write `metrics` as `<run_dir>/<name>` atomically, secrets removed."""
    return atomic_write_json(Path(run_dir) / name, scrub_secrets(to_jsonable(metrics)))


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    train_state: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    *,
    keep_last: int = 2,
    name: str | None = None,
) -> Path:
    """Save `checkpoints/step-<step>/` (or `checkpoints/<name>/`) as one atomic folder.

    Contents: `model.safetensors` (weights), `state.pt` (optimizer/scheduler/RNG state, if
    given; loaded with weights_only=True), `meta.json` (step, plus `meta`: the config
    needed to rebuild the model). Older `step-*` folders beyond `keep_last` are pruned.
    """
    ckpt_root = Path(run_dir) / CHECKPOINT_DIR
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / (name or f"step-{step:08d}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=ckpt_root))
    try:
        atomic_save_safetensors(tmp / "model.safetensors", model_state)
        if train_state is not None:
            atomic_torch_save(tmp / "state.pt", dict(train_state))
        atomic_write_json(tmp / "meta.json", {"step": step, **(meta or {})})
        if final.exists():
            old = ckpt_root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if name is None and keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete `step-*` checkpoint folders, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found) if (p / "meta.json").is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete `step-*` checkpoint folder, or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(
    ckpt_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """Returns (model_state, train_state or None, meta)."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "model.safetensors").is_file():
        raise ConfigError(f"{ckpt_dir} is not a checkpoint folder (no model.safetensors)")
    model_state = load_file(str(ckpt_dir / "model.safetensors"), device=str(map_location))
    state_path = ckpt_dir / "state.pt"
    train_state = None
    if state_path.is_file():
        train_state = read_torch_file(
            state_path, flag="checkpoint", expected="the optimizer and RNG state a run saved",
            map_location=map_location,
        )  # fmt: skip
    meta = json.loads((ckpt_dir / "meta.json").read_text())
    return model_state, train_state, meta
