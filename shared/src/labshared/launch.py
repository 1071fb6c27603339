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
     "runtime": {device, precision, seed, rank, world_size, tf32, torch
                 [, global_batch, gradients_averaged, preset_processes]},
     "started_at", "resumed_at": [...]}

A training command passes its per-process `batch_size` (and the process count its preset
was designed for): the runtime then records the global batch (batch x processes) and
whether DDP averages gradients across processes, and a run started with another process
count than its preset's says so in one yellow line naming the global batch.
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

from labshared import invocation
from labshared.config import RUNTIME_KNOBS, check_resume
from labshared.console import log
from labshared.device import Runtime, setup_runtime
from labshared.errors import ConfigError, LabError
from labshared.run_folder import CONFIG_FILE, claim_output_dir
from labshared.runs import (
    atomic_write_json,
    default_run_dir,
    git_commit,
    git_dirty,
    scrub_secrets,
    to_jsonable,
)
from labshared.training.state import init_source


@dataclass(frozen=True)
class Run:
    """A started run: its folder, its runtime, whether it continues an earlier one, and
    the checkpoint whose weights a new run starts from (`--init-from`)."""

    dir: Path
    runtime: Runtime
    resumed: bool
    init_from: Path | None = None


class RunFinished(LabError):
    """`--resume` of a run that already finished: nothing to do, nothing changed (exit 0)."""

    exit_code = 0


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
    init_from: str | Path | None = None,
    batch_size: int | None = None,
    preset_processes: int | None = None,
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
        init_from: `--init-from RUN_OR_CKPT`: a new run starts from these weights (the
            trainer loads them); checked here, recorded in the header.
        batch_size: a training command's batch per process (None: not a training run);
            the header's runtime then holds the global batch and whether gradients are
            averaged (DDP under torchrun).
        preset_processes: the process count the preset was designed for (None: no
            design); another count logs one warning naming the global batch.
        resumable: the command has `--resume` (a refusal suggests it only then).

    Raises:
        ConfigError: any failed check; no folder is created by a failed fresh start.
        RunFinished: `--resume` of a finished run (the CLI says so and exits 0).
    """
    init_path = _check_run_flags(output_dir, resume, overwrite, resumable, init_from)
    if validate is not None:
        validate()
    runtime = setup_runtime(device, precision, seed, deterministic)
    header = {
        "tool": tool,
        "command": command,
        "version": version,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "argv": invocation.command_args(),
        "preset": preset,
        "config": to_jsonable(cfg),
        "runtime": {**runtime.describe(), **batch_layout(batch_size, preset_processes, runtime)},
    }
    if init_path is not None:
        header["init_from"] = str(init_path)
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
    run_dir = _agreed_run_dir(outcome[0], runtime)
    mismatch = process_mismatch(preset, preset_processes, batch_size, runtime.world_size)
    if mismatch:
        log(f"[yellow]{mismatch}[/yellow]")
    log(
        f"{tool} {command} {version}: preset {preset}, {runtime.describe()}, "
        f"{'resumed' if resume else 'run folder'} {run_dir}"
    )
    return Run(run_dir, runtime, resumed=resume, init_from=init_path)


def _check_run_flags(
    output_dir: str | Path | None,
    resume: bool,
    overwrite: bool,
    resumable: bool,
    init_from: str | Path | None,
) -> Path | None:
    """The run-folder flags, checked before anything else (cheap, read-only, every rank);
    returns the weights file of `--init-from` (None without it). Rank 0 checks the folder
    again when it writes."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if resume and output_dir is None:
        raise ConfigError("--resume needs --output-dir naming the run to continue")
    if resume:
        read_header(output_dir)
    elif output_dir is not None:
        claim_output_dir(output_dir, overwrite=overwrite, resumable=resumable)
    return init_source(Path(init_from)) if init_from is not None else None


def _agreed_run_dir(outcome: Any, runtime: Runtime) -> Path:
    """Rank 0's outcome (the folder, a finished run, or an error), shared with every rank;
    the same error or notice is raised everywhere."""
    if runtime.world_size > 1:
        shared = [str(outcome) if isinstance(outcome, str) else f"!{outcome}"]
        torch.distributed.broadcast_object_list(shared, src=0)
        outcome = shared[0] if not shared[0].startswith("!") else ConfigError(shared[0][1:])
    if isinstance(outcome, LabError):
        raise outcome
    if outcome.startswith(_FINISHED):
        raise RunFinished(outcome[len(_FINISHED) :])
    return Path(outcome)


def batch_layout(
    batch_size: int | None, preset_processes: int | None, runtime: Runtime
) -> dict[str, Any]:
    """The header's batch fields: global batch, whether DDP averages the gradients of the
    processes, and the preset's designed process count ({} when not a training run)."""
    if batch_size is None:
        return {}
    return {
        "global_batch": batch_size * runtime.world_size,
        "gradients_averaged": runtime.world_size > 1,
        "preset_processes": preset_processes,
    }


def process_mismatch(
    preset: str | None, preset_processes: int | None, batch_size: int | None, world_size: int
) -> str | None:
    """One line when a run's process count differs from its preset's design, naming the
    global batch it gets and the one the preset was designed for; None when they agree."""
    if preset_processes is None or batch_size is None or world_size == preset_processes:
        return None
    designed = preset_processes * batch_size
    got = world_size * batch_size
    averaged = "gradients averaged over the processes" if world_size > 1 else "one process"
    keep = ""
    if designed % world_size == 0 and designed != got:
        keep = f"; --batch-size {designed // world_size} keeps the global batch"
    return (
        f"preset {preset} is designed for {preset_processes} process(es) (global batch "
        f"{designed} = {preset_processes} x {batch_size}); this run has {world_size}: global "
        f"batch {got} = {world_size} x {batch_size}, {averaged}{keep}"
    )


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
        finished = finished_message(run_dir)
        if finished:
            return _FINISHED + finished  # the header stays as it is
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


_FINISHED = "finished:"


def finished_message(run_dir: Path) -> str | None:
    """What `--resume` says of a run whose metrics.json reads `"status": "finished"`."""
    path = Path(run_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return None
    if metrics.get("status") != "finished":
        return None
    step = metrics.get("step", metrics.get("steps"))
    at = f" at step {step}" if step is not None else ""
    return (
        f"{run_dir} is finished{at}; nothing to resume, nothing changed. To train longer, "
        f"start a new run from its weights: --init-from {run_dir}"
    )


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
