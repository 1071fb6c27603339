"""What `rtd train` and `rtd train-phi` share: the data order, the run's own random
generator, and the resume / save / stop tail of every step.

Both recipes read the same way: set up (data, model, optimizer, `fork_generator`), `restore`
on `--resume`, then a loop of one training step followed by `mean_loss` and `end_step`,
then the final save. Two things make a resumed run end with exactly the weights of an
uninterrupted one:

- the data order is a function of (seed, step, rank) (`BatchSampler`), so it needs no
  state;
- every random draw of a step (the phi-input noise, phi's dropout masks) comes from one
  `torch.Generator` per rank, seeded once from the run seed and saved with every
  checkpoint. The global RNG is neither read nor re-seeded by the loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labshared import distributed
from labshared.console import log
from labshared.device import Runtime
from labshared.errors import ConfigError
from labshared.runs import latest_checkpoint, load_checkpoint, save_checkpoint


class BatchSampler:
    """Stateless row order: an endless stream of per-epoch permutations, seeded by
    (seed, epoch), cut into global batches of B * world_size and then per rank. Step s of
    rank r always reads the same rows, so a resumed run sees exactly the data it would have
    seen (no sampler state to save)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """(B,) row indices of this rank's batch at `step` (0-based)."""
        start = (step * self.world_size + self.rank) * self.batch_size
        pos = torch.arange(start, start + self.batch_size)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch)[pos[sel] % self.n]
        return out


def fork_generator(seed: int, rank: int) -> torch.Generator:
    """This rank's generator for the run, seeded once from the run seed (ranks differ, so
    their noise does); a CPU generator, so its state is the same bytes on every device."""
    return torch.Generator().manual_seed(seed * 7919 + rank)


@dataclass
class Resumable:
    """What a checkpoint holds and `--resume` restores.

    Attributes:
        module: the trained module (unwrapped from DDP).
        optimizer: its optimizer.
        generator: this rank's generator (`fork_generator`); every rank's state is saved.
        names: the parameters to save (None: the whole state dict); a partial fine-tune
            stores only what it changes.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    names: list[str] | None = None

    def model_state(self) -> dict[str, torch.Tensor]:
        state = self.module.state_dict()
        return state if self.names is None else {n: state[n] for n in self.names}


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


def restore(run_dir: Path, state: Resumable, runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """Load the latest checkpoint of `run_dir` into `state`.

    Returns:
        (its step, its meta), or (0, {}) when the run saved none yet.
    """
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return 0, {}
    model_state, train_state, meta = load_checkpoint(ckpt, runtime.device)
    state.module.load_state_dict(model_state, strict=state.names is None)
    state.optimizer.load_state_dict(train_state["optimizer"])
    saved = train_state["rng"]
    # A rank the saved run did not have keeps its fresh generator (more processes than
    # before also change the data order, so such a run does not continue exactly anyway).
    if runtime.rank < len(saved):
        state.generator.set_state(saved[runtime.rank].cpu())
    log(f"resumed from {ckpt} at step {meta['step']}")
    return meta["step"], meta


def save(
    run_dir: Path, step: int, state: Resumable, runtime: Runtime, meta: dict[str, Any],
    keep_last: int,
) -> None:  # fmt: skip
    """Write the resumable checkpoint of `step`. Collective: every rank hands in its
    generator state, rank 0 writes, all wait for it."""
    mine = state.generator.get_state().to(runtime.device).unsqueeze(0)
    states = list(distributed.all_gather(mine).cpu())  # one generator state per rank
    if runtime.is_main:
        save_checkpoint(
            run_dir, step, state.model_state(),
            {"optimizer": state.optimizer.state_dict(), "rng": states}, meta,
            keep_last=keep_last,
        )  # fmt: skip
    distributed.barrier()


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
    step: int,
    schedule: Schedule,
    run_dir: Path,
    state: Resumable,
    runtime: Runtime,
    meta: Callable[[], dict[str, Any]],
) -> bool:
    """The tail of every step of both recipes: save a checkpoint when one is due, and say
    whether this invocation leaves here (`--stop-after`; continue with `--resume`).

    `meta()` gives what the checkpoint records beside the weights (history, counts); it is
    called on every rank, only when a checkpoint is written, so it may be collective.
    """
    if schedule.saves(step):
        save(run_dir, step, state, runtime, meta(), schedule.keep_last)
    if schedule.stops(step):
        log(f"stopped after {schedule.stop_after} steps at step {step}; continue with --resume")
        return True
    return False
