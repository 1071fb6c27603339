"""Which `--output-dir` a fresh run may use, and what `--overwrite` may delete.

The one rule (`claim_output_dir`), checked twice by `labshared.launch.start_run`: first,
read-only, before any other check (so an occupied folder is refused before data or
weights load), then by rank 0 just before it writes the header.

- A new or empty folder is used as it is.
- A run folder (its `config.json` is one of our headers: a JSON object with "tool" and
  "command") is refused, naming the run it holds (command and start time); with
  `--overwrite` it is deleted, unless other run folders lie below it (an evaluation
  written inside a training run's folder): those are someone's results too, and the
  refusal names them.
- Any other non-empty folder (a user's files, a parent of run folders such as `runs/rtd`
  after `rtd eval` wrote `runs/rtd/eval/<timestamp>`) is refused even with
  `--overwrite`, naming some of what it holds. `--overwrite` never deletes what no tool
  of ours made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labshared.errors import ConfigError

CONFIG_FILE = "config.json"
HEADER_KEYS = ("tool", "command")
_SHOWN = 4  # entries (or nested runs) a refusal names before "..."
_SCAN_LIMIT = 5000  # folders looked at for nested runs below a folder that is not ours


def run_header(folder: str | Path) -> dict[str, Any] | None:
    """The header of `folder` when it is a run folder of ours, else None (no config.json,
    not JSON, or JSON without our "tool" and "command" keys)."""
    try:
        header = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(header, dict) and all(key in header for key in HEADER_KEYS):
        return header
    return None


def nested_runs(folder: str | Path, limit: int | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(path, header) of the run folders strictly below `folder`, in walk order; at most
    `limit` folders are looked at (None: all). Symbolic links are not followed."""
    found: list[tuple[Path, dict[str, Any]]] = []
    seen = 0
    for root, dirs, _files in os.walk(folder):
        dirs.sort()
        for name in dirs:
            seen += 1
            if (header := run_header(Path(root) / name)) is not None:
                found.append((Path(root) / name, header))
        if limit is not None and seen >= limit:
            break
    return found


def describe_run(header: dict[str, Any]) -> str:
    """`robattr train` (preset mnist-toy) started 2026-12-07T00:12:51: for a refusal."""
    preset = f" (preset {header['preset']})" if header.get("preset") else ""
    started = header.get("started_at") or "at an unrecorded time"
    return f"`{header['tool']} {header['command']}`{preset} started {started}"


def claim_output_dir(run_dir: str | Path, *, overwrite: bool, resumable: bool = True) -> bool:
    """Check that a fresh run may use `run_dir`; touches nothing.

    Args:
        run_dir: the `--output-dir` (it may not exist yet).
        overwrite: `--overwrite` was given.
        resumable: the command has `--resume` (the refusal suggests it only then).

    Returns:
        True when `run_dir` is one of our run folders that `--overwrite` must empty first;
        False when it is new or empty.

    Raises:
        ConfigError: a file; a non-empty folder without `--overwrite`; with `--overwrite`,
            a folder that is not one of our run folders or holds other run folders.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--output-dir {run_dir} is a file; expected a new or empty folder")
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    if not entries:
        return False
    header = run_header(run_dir)
    if header is None:
        raise ConfigError(_not_a_run_folder(run_dir, entries))
    below = nested_runs(run_dir)
    if below:
        resume = "--resume to continue it, or " if resumable else ""
        raise ConfigError(
            f"--output-dir {run_dir} is not empty: it holds the run {describe_run(header)} "
            f"and, below it, {_runs_listed(below)}; --overwrite would delete those too and "
            f"is refused: pass {resume}a new or empty --output-dir"
        )
    if overwrite:
        return True
    resume = "pass --resume to continue it or " if resumable else "pass "
    raise ConfigError(
        f"--output-dir {run_dir} is not empty; {resume}--overwrite to delete it and start "
        f"again (it holds the run {describe_run(header)})"
    )


def _not_a_run_folder(run_dir: Path, entries: list[Path]) -> str:
    below = nested_runs(run_dir, limit=_SCAN_LIMIT)
    if below:
        what = _runs_listed(below)
    else:
        names = [p.name + ("/" if p.is_dir() else "") for p in entries[:_SHOWN]]
        more = f" and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else ""
        what = ", ".join(names) + more
    return (
        f"--output-dir {run_dir} is not empty and is not a run folder (no config.json header "
        f"of rtd, tldr or robattr): it holds {what}; --overwrite deletes only a run folder, "
        "so pass a new or empty --output-dir"
    )


def _runs_listed(runs: list[tuple[Path, dict[str, Any]]]) -> str:
    shown = [f"{path} ({describe_run(header)})" for path, header in runs[:_SHOWN]]
    more = f" and {len(runs) - _SHOWN} more" if len(runs) > _SHOWN else ""
    count = f"{len(runs)} run folder{'s' if len(runs) != 1 else ''}"
    return f"{count}: {', '.join(shown)}{more}"
