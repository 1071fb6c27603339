"""Content-keyed caches for frozen features and embeddings.

A cache entry is `<root>/<name>-<key>.safetensors` plus a JSON sidecar holding what the
key was computed from. The key hashes everything that determines the contents (model and
weights, dataset, split, transform, code version), so a changed input never reuses a
stale entry, unlike caches keyed by file name. Hits are logged with their path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from labshared.console import log
from labshared.runs import atomic_save_safetensors, atomic_write_json, to_jsonable


def cache_root() -> Path:
    """`$LABSHARED_CACHE`, else `$XDG_CACHE_HOME/labshared`, else `~/.cache/labshared`."""
    if env := os.environ.get("LABSHARED_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labshared"


def cache_key(spec: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of `spec`."""
    canonical = json.dumps(to_jsonable(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Size and mtime of a file: cheap, and changes whenever the file is rewritten."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_tensors(
    name: str,
    spec: Mapping[str, Any],
    compute: Callable[[], Mapping[str, torch.Tensor]],
    *,
    root: str | Path | None = None,
    enabled: bool = True,
) -> dict[str, torch.Tensor]:
    """Return the tensors for `spec`, computing and storing them on a miss.

    Args:
        name: readable prefix of the file name (e.g. "cirr-val-gallery").
        spec: everything that determines the tensors; hashed into the key.
        compute: called on a miss; returns a dict of tensors.
        enabled: False bypasses the cache entirely (`--no-cache`).
    """
    if not enabled:
        return dict(compute())
    root = Path(root) if root else cache_root() / "features"
    key = cache_key(spec)
    path = root / f"{name}-{key}.safetensors"
    if path.is_file():
        log(f"[dim]cache hit: {path}[/dim]")
        return load_file(str(path))
    tensors = dict(compute())
    atomic_save_safetensors(path, tensors, metadata={"key": key})
    atomic_write_json(path.with_suffix(".json"), {"key": key, "spec": spec})
    log(f"[dim]cache written: {path}[/dim]")
    return tensors
