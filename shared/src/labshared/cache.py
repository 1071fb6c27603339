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
from collections.abc import Callable, Iterable, Mapping
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


def hf_datasets_cache() -> Path:
    """Where Hugging Face `datasets` writes the Arrow copies of local folders it loads
    (`cache_dir=`): under `cache_root()`, not `~/.cache/huggingface`. Hub ids keep the
    Hugging Face cache they were downloaded to."""
    return cache_root() / "hf-datasets"


def cache_key(spec: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of `spec`."""
    canonical = json.dumps(to_jsonable(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


#: Names the rule below; it opens every digest, so changing the rule changes every key.
FINGERPRINT_RULE = "labshared-files-v1"
_FLUSH_LINES = 8192  # lines hashed per update: memory stays flat for any number of files


def fingerprint_files(root: str | Path, paths: Iterable[str | Path] | None = None) -> str:
    """16 hex digits of SHA-256 over (path relative to `root`, size, mtime_ns) of every file.

    The one fingerprint rule of every loader: each file a loader reads (annotations and
    every image) enters its dataset's cache key this way, so rewriting any of them (new
    size or new mtime) is a cache miss. Contents are not read: a stat per file. Sorted, so
    the order the loader lists files in does not matter; a listed file that is absent
    hashes as absent (the loader fails on it later, with its own message). The root itself
    is not hashed (callers that want a moved copy to miss add it to their key).

    Limit: a file rewritten with the same size within the file system's timestamp
    granularity (a few ms) keeps its fingerprint, as in any stat-based cache (git, make).

    Args:
        root: the dataset folder; paths are hashed relative to it.
        paths: files, either relative to `root` or built as `root / name` (absolute or
            not); a path outside `root` is hashed as `../...`. None: every file under
            `root`, walked with `os.scandir` (hidden files included).
    """
    base = os.fspath(root) or "."
    stats = _walk(base) if paths is None else _stat_names(base, _relative_names(base, paths))
    h = hashlib.sha256(f"{FINGERPRINT_RULE}\n".encode())
    stats.sort()
    for i in range(0, len(stats), _FLUSH_LINES):
        lines = (
            f"{name}\t{size}\t{mtime}\n" if size is not None else f"{name}\tabsent\n"
            for name, size, mtime in stats[i : i + _FLUSH_LINES]
        )
        h.update("".join(lines).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


_Stat = tuple[str, int | None, int | None]  # name, size, mtime_ns (None, None: absent)


def _relative_names(base: str, paths: Iterable[str | Path]) -> set[str]:
    """`paths` as names relative to `base` (a set: a file listed twice is hashed once)."""
    given = "" if base == "." else base.rstrip(os.sep) + os.sep
    absolute = os.path.abspath(base).rstrip(os.sep) + os.sep
    out = set()
    for p in map(os.fspath, paths):
        if given and p.startswith(given):
            p = p[len(given) :]
        elif p.startswith(absolute):
            p = p[len(absolute) :]
        elif os.path.isabs(p):
            p = os.path.relpath(p, absolute)
        out.add(p)
    return out


def _stat_names(base: str, names: Iterable[str]) -> list[_Stat]:
    """(name, size, mtime_ns) of each name under `base`: one `stat` relative to an open
    descriptor of `base` (no path joining, the root resolved once)."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # no root: every file is absent
        return [(name, None, None) for name in names]
    out: list[_Stat] = []
    stat = os.stat
    try:
        for name in names:
            try:
                st = stat(name, dir_fd=fd)
                out.append((name, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((name, None, None))
    finally:
        os.close(fd)
    return out


def _walk(base: str) -> list[_Stat]:
    """(name relative to `base`, size, mtime_ns) of every file under `base`, walked with
    `os.scandir` (its entry types need no stat; each file's stat is its one syscall)."""
    out: list[_Stat] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(base, rel) if rel else base) as it:
            for entry in it:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir():
                    stack.append(name)
                elif entry.is_file():
                    st = entry.stat()
                    out.append((name, st.st_size, st.st_mtime_ns))
    return out


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
