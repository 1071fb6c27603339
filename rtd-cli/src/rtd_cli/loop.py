"""What `rtd train` and `rtd train-phi` share around the kit (`labshared.training`): the
run's own random generator, the schedule, and the start and the tail of every step.

Both recipes read the same way: set up (data, model, optimizer, `fork_generator`) into a
`TrainState`, `begin` (restore on `--resume`, load `--init-from`, mark the run running),
then a loop of one training step followed by `mean_loss` and `end_step`, then the final
save. Two things make a resumed run end with exactly the weights of an uninterrupted one:

- the data order is a function of (seed, step, rank) (`labshared.training.BatchSampler`),
  so it needs no state;
- every random draw of a step (the phi-input noise, phi's dropout masks) comes from one
  `torch.Generator` per rank, seeded once from the run seed and saved with every
  checkpoint (`TrainState.generators`). The loops neither read nor re-seed the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labshared import distributed
from labshared.console import log
from labshared.device import Runtime
from labshared.errors import ConfigError
from labshared.training import (
    Interrupt,
    TrainState,
    load_init_weights,
    restore_state,
    save_state,
    write_status,
)

#: The name of the run's generator in `TrainState.generators` (and in the checkpoint).
NOISE = "noise"


def fork_generator(seed: int, rank: int) -> torch.Generator:
    """This rank's generator for the run, seeded once from the run seed (ranks differ, so
    their noise does); a CPU generator, so its state is the same bytes on every device."""
    return torch.Generator().manual_seed(seed * 7919 + rank)


@dataclass(frozen=True)
class Schedule:
    """When a run logs, saves and stops.

    Attributes:
        steps: the last step of the run.
        checkpoint_every / log_every: every how many steps (the last step always does both).
        keep_last: resumable checkpoints kept on disk.
        start: the step this invocation started from (0, or the restored step).
        stop_after: leave after this many steps of this invocation (`--stop-after`).
    """

    steps: int
    checkpoint_every: int
    log_every: int
    keep_last: int
    start: int = 0
    stop_after: int | None = None

    def logs(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.steps

    def stops(self, step: int) -> bool:
        """Leave here, before the last step, because `stop_after` steps are done."""
        done = self.stop_after is not None and step - self.start >= self.stop_after
        return done and step < self.steps

    def saves(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.steps or self.stops(step)


def begin(
    run_dir: Path, state: TrainState, runtime: Runtime, *, resume: bool, init_from: Path | None
) -> None:
    """Put `state` where this invocation starts: the latest checkpoint on `--resume`, the
    weights of `--init-from` for a new run (optimizer and step start fresh), else as built;
    then mark the run `running` in metrics.json."""
    if resume:
        restore_state(run_dir, state, runtime)
    elif init_from is not None:
        load_init_weights(init_from, state.module, state.names)
    write_status(run_dir, "running", step=state.step)


def mean_loss(loss: torch.Tensor, step: int) -> float:
    """The step's loss averaged over ranks (collective).

    Raises:
        ConfigError: the loss is not finite (the run cannot recover from it).
    """
    value = float(distributed.all_reduce_mean(loss.detach()))
    if not math.isfinite(value):
        raise ConfigError(f"loss became {value} at step {step}; lower --lr")
    return value


def end_step(
    schedule: Schedule,
    run_dir: Path,
    state: TrainState,
    runtime: Runtime,
    interrupt: Interrupt,
    meta: Callable[[], dict[str, Any]],
) -> bool:
    """The tail of every step of both recipes: save a checkpoint when one is due or a
    signal came, and say whether this invocation leaves here (`--stop-after`).

    `meta()` gives what the checkpoint's meta.json records beside the weights; it is called
    on every rank, only when a checkpoint is written, so it may be collective. So is the
    signal check, on every rank at every step.

    Raises:
        Interrupted: SIGINT / SIGTERM came during the step; its checkpoint is saved and the
            run marked `interrupted` (the CLI prints the command that resumes it).
    """
    step = state.step
    signalled = interrupt.requested(runtime)
    if schedule.saves(step) or signalled:
        save_state(run_dir, state, runtime, meta=meta(), keep_last=schedule.keep_last)
    if signalled:
        write_status(run_dir, "interrupted", step=step)
        raise interrupt.stop(run_dir, step)
    if schedule.stops(step):
        write_status(run_dir, "stopped", step=step)
        log(f"stopped after {schedule.stop_after} steps at step {step}; continue with --resume")
        return True
    return False
