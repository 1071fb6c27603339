"""`start_run`: the one way every command of every tool starts a run.

In this order, so that a mistake costs nothing:

1. the tool's own checks on the resolved config (`validate`), and the run-folder flags
   (`--resume` and `--overwrite` exclude each other; `--resume` needs `--output-dir`);
2. the runtime (`labshared.device.setup_runtime`: device, precision, TF32, seed, torchrun);
3. on rank 0 only, the run folder: a fresh one is created; a non-empty one is refused
   unless `--resume` (its saved config is compared with this one by
   `labshared.config.check_resume`) or `--overwrite` of one of our own run folders
   (`labshared.run_folder.claim_output_dir`: never a folder of other files, nor one
   holding other runs); then the config header is written. The path, or the error, is
   broadcast to the other ranks, which raise the same error.

The folder rule is also checked, read-only, before step 1: an occupied `--output-dir` is
refused before the tool's checks read data or weights. A command that fails any check
before step 3 leaves no folder behind, so the corrected rerun with the same `-o` just works.

The header (`config.json`, secrets scrubbed) is the same for all tools::

    {"tool", "command", "version", "git_commit", "preset", "config": {every field},
     "runtime": {device, precision, seed, rank, world_size, tf32, torch},
     "started_at", "resumed_at": [...]}
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labshared.config import RUNTIME_KNOBS, check_resume
from labshared.console import log
from labshared.device import Runtime, setup_runtime
from labshared.errors import ConfigError, LabError
from labshared.run_folder import CONFIG_FILE, claim_output_dir
from labshared.runs import (
    atomic_write_json,
    default_run_dir,
    git_commit,
    scrub_secrets,
    to_jsonable,
)


@dataclass(frozen=True)
class Run:
    """A started run: its folder, its runtime, and whether it continues an earlier one."""

    dir: Path
    runtime: Runtime
    resumed: bool


def start_run(
    tool: str,
    command: str,
    cfg: Any,
    *,
    version: str,
    preset: str | None = None,
    output_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    precision: str = "auto",
    seed: int = 0,
    deterministic: bool = False,
    validate: Callable[[], None] | None = None,
    allowed_on_resume: Iterable[str] = RUNTIME_KNOBS,
    resumable: bool = True,
) -> Run:
    """Validate, set up the runtime, then create (or reopen) the run folder on rank 0.

    Args:
        tool, command: e.g. "rtd", "train"; the default folder is
            `runs/<tool>/<command>/<timestamp>`.
        cfg: the resolved config (a dataclass or a mapping), saved whole in the header.
        version: the tool's version.
        preset: the preset the config was resolved from (None for commands without one).
        output_dir, resume, overwrite: the run-folder flags (`-o`, `--resume`,
            `--overwrite`).
        device, precision, seed, deterministic: the runtime flags.
        validate: the tool's checks that need more than the config's own (files that must
            exist, combinations of flags); raise `ConfigError`.
        allowed_on_resume: fields that may differ from the saved run on `--resume`.
        resumable: the command has `--resume` (a refusal suggests it only then).

    Raises:
        ConfigError: any failed check; no folder is created by a failed fresh start.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if resume and output_dir is None:
        raise ConfigError("--resume needs --output-dir naming the run to continue")
    # The folder rule first, read-only (cheap, and every rank sees the same folder); rank 0
    # checks it again below, when it writes.
    if resume:
        read_header(output_dir)
    elif output_dir is not None:
        claim_output_dir(output_dir, overwrite=overwrite, resumable=resumable)
    if validate is not None:
        validate()
    runtime = setup_runtime(device, precision, seed, deterministic)
    header = {
        "tool": tool,
        "command": command,
        "version": version,
        "git_commit": git_commit(),
        "preset": preset,
        "config": to_jsonable(cfg),
        "runtime": runtime.describe(),
    }
    outcome: list[Any] = [None]
    if runtime.is_main:
        try:
            outcome[0] = str(
                _open_run_dir(
                    header, output_dir, resume, overwrite, set(allowed_on_resume), resumable
                )
            )
        except LabError as exc:
            outcome[0] = exc
    if runtime.world_size > 1:
        shared = [str(outcome[0]) if isinstance(outcome[0], str) else f"!{outcome[0]}"]
        torch.distributed.broadcast_object_list(shared, src=0)
        outcome[0] = shared[0] if not shared[0].startswith("!") else ConfigError(shared[0][1:])
    if isinstance(outcome[0], LabError):
        raise outcome[0]
    run_dir = Path(outcome[0])
    log(
        f"{tool} {command} {version}: preset {preset}, {runtime.describe()}, "
        f"{'resumed' if resume else 'run folder'} {run_dir}"
    )
    return Run(run_dir, runtime, resumed=resume)


def _open_run_dir(
    header: dict[str, Any],
    output_dir: str | Path | None,
    resume: bool,
    overwrite: bool,
    allowed: set[str],
    resumable: bool = True,
) -> Path:
    """Rank 0's part: decide the folder, check a resume, write the header."""
    run_dir = Path(output_dir) if output_dir else default_run_dir(header["tool"], header["command"])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    if resume:
        saved = read_header(run_dir)
        # The saved header was scrubbed of secret-looking keys: compare it with this run's
        # header scrubbed the same way, or every such key would read as a changed field.
        now = _compared(scrub_secrets(header))
        check_resume(_compared(saved), now, str(run_dir), allowed)
        header = {**saved, "runtime": header["runtime"], "git_commit": header["git_commit"]}
        header["resumed_at"] = [*saved.get("resumed_at", []), stamp]
    else:
        if claim_output_dir(run_dir, overwrite=overwrite, resumable=resumable):
            shutil.rmtree(run_dir)
        header["started_at"] = stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG_FILE, scrub_secrets(header))
    return run_dir


def _compared(header: Mapping[str, Any]) -> dict[str, Any]:
    """What must match on resume: the tool, command and every config field, plus the
    runtime choices that change results (seed, precision); the device may differ."""
    runtime = header.get("runtime", {})
    return {
        "tool": header.get("tool"),
        "command": header.get("command"),
        **header.get("config", {}),
        "seed": runtime.get("seed"),
        "precision": runtime.get("precision"),
    }


def read_header(run_dir: str | Path) -> dict[str, Any]:
    """The config header of a run folder.

    Raises:
        ConfigError: the folder has no readable `config.json` (not a run folder).
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found; is {run_dir} a run folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON ({exc}); expected a run's config header"
        ) from None
