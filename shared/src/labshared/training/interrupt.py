"""Ctrl-C (SIGINT) and SIGTERM during training: save, mark, and say how to go on.

`Interrupt` replaces the two handlers for the length of a training loop. A signal only
sets a flag; the loop asks `interrupt.requested(runtime)` at the end of each step (under
torchrun the flag is agreed by every rank, so all of them save the same step), then saves
a checkpoint of that step, marks the run `interrupted` in metrics.json and raises
`Interrupted`, which the CLI prints as one line with the command that resumes the run and
exit code 128 + the signal (130 for Ctrl-C, 143 for SIGTERM). A second Ctrl-C leaves at
once (KeyboardInterrupt), keeping the last checkpoint on disk.
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from labshared import distributed
from labshared.console import log
from labshared.device import Runtime
from labshared.errors import LabError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Run flags that must not be replayed on resume: they start a different run.
_DROPPED_FLAGS = {"--overwrite": 0, "--init-from": 1, "--resume": 0}


class Interrupted(LabError):
    """Training stopped on a signal after saving; the CLI exits with `exit_code`."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class Interrupt:
    """Turns SIGINT / SIGTERM into a request to stop after the current step.

    Use as a context manager around the loop; outside the main thread (where Python cannot
    install handlers) it does nothing and `requested` stays False.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the user insists: leave now, the last checkpoint stays
        self.signum = signum
        log(f"[yellow]{signal.Signals(signum).name}: saving a checkpoint at the end of this "
            "step (Ctrl-C again to leave at once)[/yellow]")  # fmt: skip

    def requested(self, runtime: Runtime) -> bool:
        """Whether any rank was signalled (collective under torchrun: call it on every
        rank at the same point of every step)."""
        flag = float(self.signum or 0)
        if runtime.world_size > 1:
            agreed = torch.tensor([flag], device=runtime.device)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX)
            flag = float(agreed.item())
        if flag and self.signum is None:
            self.signum = int(flag)
        return bool(flag)

    def stop(self, run_dir: str | Path, step: int) -> Interrupted:
        """The error to raise once the step's checkpoint is saved."""
        name = signal.Signals(self.signum or signal.SIGINT).name
        return Interrupted(
            f"{name}: stopped at step {step}, checkpoint saved in {Path(run_dir) / 'checkpoints'}"
            f"; continue with: {resume_command(run_dir)}",
            self.signum or signal.SIGINT,
        )


def resume_command(run_dir: str | Path) -> str:
    """The command line that continues the run in `run_dir`: the recorded command, without
    the flags that start another run (`--overwrite`, `--init-from`), with `--resume` and
    `-o <run_dir>`; under torchrun, launched the same way."""
    header_file = Path(run_dir) / "config.json"
    header = json.loads(header_file.read_text()) if header_file.is_file() else {}
    tool, command = header.get("tool", "<tool>"), header.get("command", "<command>")
    args = list(header.get("argv") or [command])
    kept, skip = [], 0
    for arg in args:
        if skip:
            skip -= 1
            continue
        flag = arg.split("=", 1)[0]
        if flag in _DROPPED_FLAGS:
            skip = 0 if "=" in arg else _DROPPED_FLAGS[flag]
            continue
        kept.append(arg)
    if not {"-o", "--output-dir"} & {a.split("=", 1)[0] for a in kept}:
        kept += ["-o", str(run_dir)]
    world = distributed.get_world_size()
    launcher = f"torchrun --nproc_per_node {world} -m {tool}_cli" if world > 1 else tool
    return " ".join([launcher, *map(shlex.quote, kept), "--resume"])
