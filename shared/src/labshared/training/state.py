"""What a training checkpoint holds, and the three ways a run uses one.

A checkpoint (`checkpoints/step-*/`, written atomically by `labshared.runs`) holds the
weights (`model.safetensors`) and, in `state.pt` (read with `weights_only=True`): the
optimizer, the LR scheduler and the GradScaler, every rank's named generators and global
RNG state, and the trainer's progress (step, epoch, history, running sums). That is all a
resumed run needs to end with exactly the weights of an uninterrupted one, as long as the
trainer draws its data order from (seed, step) or from a saved generator.

- `save_state`: collective; every rank hands in its RNG states, rank 0 writes.
- `restore_state`: `--resume`; says which step it continues from.
- `load_init_weights`: `--init-from RUN_OR_CKPT`; only the weights, for a new run (to
  train longer, or to fine-tune), recorded in the new run's header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from labshared import distributed
from labshared.console import log
from labshared.device import Runtime
from labshared.errors import ConfigError
from labshared.runs import (
    latest_checkpoint,
    load_checkpoint,
    read_safetensors,
    save_checkpoint,
    write_metrics,
)

METRICS_FILE = "metrics.json"


@dataclass
class TrainState:
    """Everything a checkpoint saves and `--resume` restores.

    Attributes:
        module: the trained module (unwrapped from DDP).
        optimizer: its optimizer.
        generators: this rank's named generators (noise, dropout, data order); each rank's
            states are saved, so every rank continues its own stream.
        scheduler, scaler: the LR scheduler and GradScaler, when the trainer has them.
        names: the parameters to save (None: the whole state dict); a partial fine-tune
            stores only what it changes.
        progress: the trainer's own position (step, epoch, history, ...): plain values and
            tensors, saved as they are.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    scheduler: Any = None
    scaler: Any = None
    names: list[str] | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """Optimizer steps done so far (the checkpoint's name)."""
        return int(self.progress.get("step", 0))

    def model_state(self) -> dict[str, torch.Tensor]:
        """The weights to save: all of them, or only `names`."""
        state = self.module.state_dict()
        return state if self.names is None else {n: state[n] for n in self.names}


def _rank_rng(state: TrainState, device: torch.device) -> dict[str, Any]:
    """This rank's random state: its named generators and the global (CPU, CUDA) RNG."""
    out: dict[str, Any] = {
        "generators": {k: g.get_state() for k, g in state.generators.items()},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-item list outside torchrun)."""
    if not distributed.is_initialized():
        return [obj]
    out: list[Any] = [None] * distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def save_state(
    run_dir: str | Path,
    state: TrainState,
    runtime: Runtime,
    *,
    meta: dict[str, Any] | None = None,
    keep_last: int = 2,
    name: str | None = None,
) -> None:
    """Write the resumable checkpoint of `state.step` (or `checkpoints/<name>`).

    Collective: every rank hands in its RNG states, rank 0 writes, all wait for it.
    """
    ranks = _gather(_rank_rng(state, runtime.device))
    if runtime.is_main:
        train_state = {"optimizer": state.optimizer.state_dict(), "ranks": ranks,
                       "progress": state.progress}  # fmt: skip
        if state.scheduler is not None:
            train_state["scheduler"] = state.scheduler.state_dict()
        if state.scaler is not None:
            train_state["scaler"] = state.scaler.state_dict()
        save_checkpoint(run_dir, state.step, state.model_state(), train_state, meta,
                        keep_last=keep_last, name=name)  # fmt: skip
    distributed.barrier()


def restore_state(run_dir: str | Path, state: TrainState, runtime: Runtime) -> dict[str, Any]:
    """Load the latest checkpoint of `run_dir` into `state` (`--resume`).

    Returns:
        The checkpoint's meta, or {} when the run saved none yet (it then starts at step 0,
        and says so).

    Raises:
        ConfigError: the checkpoint holds no kit state (an older format); its weights still
            serve `--init-from`.
    """
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        log(f"--resume: {run_dir} holds no checkpoint yet; starting at step 0")
        return {}
    model_state, train_state, meta = load_checkpoint(ckpt, runtime.device)
    if not train_state or "ranks" not in train_state:
        # written before this kit (or by hand): its weights are usable, its state is not
        raise ConfigError(
            f"--resume {run_dir}: {ckpt / 'state.pt'} is not a resumable state of this version "
            f"(no per-rank random state); start a new run from its weights: --init-from {ckpt}"
        )
    state.module.load_state_dict(model_state, strict=state.names is None)
    state.optimizer.load_state_dict(train_state["optimizer"])
    if state.scheduler is not None:
        state.scheduler.load_state_dict(train_state["scheduler"])
    if state.scaler is not None:
        state.scaler.load_state_dict(train_state["scaler"])
    ranks = train_state["ranks"]
    if runtime.rank < len(ranks):
        mine = ranks[runtime.rank]
        for key, gen in state.generators.items():
            gen.set_state(mine["generators"][key].cpu())
        torch.set_rng_state(mine["torch"].cpu())
        if "cuda" in mine and runtime.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"].cpu(), runtime.device)
    else:
        # More processes than the saved run had: this rank keeps its fresh streams (the data
        # order changes with the process count too, so such a run does not continue exactly).
        log(f"[yellow]rank {runtime.rank}: the checkpoint has {len(ranks)} rank(s); this rank "
            "starts fresh random streams[/yellow]")  # fmt: skip
    state.progress.clear()
    state.progress.update(train_state["progress"])
    log(f"resuming at step {state.step} from {ckpt}")
    return meta


def init_source(source: Path) -> Path:
    """The weights file behind `--init-from`: a run folder (its latest checkpoint), a
    checkpoint folder, or a .safetensors file."""
    if source.is_file():
        return source
    if (source / "model.safetensors").is_file():
        return source / "model.safetensors"
    ckpt = latest_checkpoint(source) if source.is_dir() else None
    if ckpt is None:
        what = "does not exist" if not source.exists() else "holds no checkpoint"
        raise ConfigError(
            f"--init-from {source}: {what}; expected a run folder with checkpoints/step-*, "
            "a checkpoint folder or a model.safetensors file"
        )
    return ckpt / "model.safetensors"


def load_init_weights(
    source: str | Path, module: nn.Module, names: list[str] | None = None
) -> dict[str, Any]:
    """Load the weights of `source` into `module` for a new run (`--init-from`).

    Args:
        source: a run folder, a checkpoint folder or a `model.safetensors` file.
        module: the freshly built module (its architecture must match).
        names: the parameters a partial checkpoint holds (None: every weight).

    Returns:
        What the new run's header records: the file and the step it was saved at.

    Raises:
        ConfigError: no such checkpoint, or weights of another architecture.
    """
    path = init_source(Path(source))
    weights, _ = read_safetensors(path, flag="--init-from", expected="a model.safetensors")
    meta_file = path.parent / "meta.json"
    step = json.loads(meta_file.read_text()).get("step") if meta_file.is_file() else None
    own = module.state_dict()
    wanted = set(own) if names is None else set(names)
    missing, extra = sorted(wanted - set(weights)), sorted(set(weights) - set(own))
    shapes = [k for k in set(weights) & set(own) if weights[k].shape != own[k].shape]
    if missing or extra or shapes:
        raise ConfigError(
            f"--init-from {path}: weights of another model ({len(missing)} missing, "
            f"{len(extra)} unexpected, {len(shapes)} of another shape; e.g. "
            f"{(missing + extra + shapes)[:3]}); expected a checkpoint of this command's model"
        )
    module.load_state_dict(weights, strict=names is None)
    log(f"--init-from: weights of {path}" + (f" (step {step})" if step is not None else ""))
    return {"path": str(path), "step": step}


def read_weights(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (tests and tools comparing runs)."""
    return load_file(str(path), device=device)


def write_status(run_dir: str | Path, status: str, **fields: Any) -> None:
    """Merge `status` (running | interrupted | stopped | finished) and `fields` into the
    run's metrics.json (rank 0 only), keeping what the trainer wrote there before."""
    if not distributed.is_main():
        return
    path = Path(run_dir) / METRICS_FILE
    current: dict[str, Any] = {}
    if path.is_file():
        try:
            current = json.loads(path.read_text())
        except json.JSONDecodeError:
            current = {}
    write_metrics(run_dir, {**current, **fields, "status": status})
