"""The `robattr train` recipe, read top to bottom: data -> model -> loop -> checkpoints.

It reproduces the official Lightning trainer (`project/main.py` with `pl_classifier.py`,
`pl_l2_plus_cosd_classifier.py`, `pl_hessian_classifier.py`) as an explicit loop:
cross-entropy on the clean batch plus the chosen regulariser (`regularizers.py`), global
gradient-norm clipping (0.5), MultiStepLR stepped once per epoch, validation on the test
split after every epoch, the best checkpoint chosen by validation accuracy.

Run-time behaviour:
- AMP: the forward for the cross-entropy runs under autocast; the regulariser always
  runs in fp32 outside autocast (double backprop is fragile in half precision), on its own
  fp32 forward passes. In fp32 the clean forward is shared with the regulariser.
- DDP (torchrun): the model is wrapped once; the regulariser's extra forward passes go
  through the unwrapped module, so there is one DDP forward and one backward per step
  and DDP's gradient hooks average every parameter's gradient (clean and regulariser
  paths) across ranks. Each rank reads its shard through DistributedSampler.
- Randomness: the regulariser's noise at step t on rank r comes from a generator seeded
  with (seed, rank, t), so a resumed run draws the same noise as an uninterrupted one.
- Resume: `checkpoints/step-*` hold weights, optimizer, scheduler, grad-scaler, RNG and
  progress (epoch, step, position inside the epoch); the data order of an epoch is a
  function of (seed, epoch), so a mid-epoch resume skips exactly the batches already seen.
  The run folder and its config header come from `labshared.launch.start_run` (the CLI
  calls it), which also refuses a resume with other settings than the run's own.

Deviation: the official code also evaluates the regulariser on every validation batch;
here validation reports accuracy and cross-entropy only (robustness is measured by
`robattr eval`), which keeps per-epoch evaluation cheap on ImageNet-100.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from labshared import distributed
from labshared.console import log, make_progress
from labshared.data.image_classification import build_dataset, get_dataset_info
from labshared.device import Runtime, make_grad_scaler
from labshared.runs import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_metrics,
)
from robattr_cli.config import TrainConfig
from robattr_cli.model import build_model, model_meta, use_elementary_batchnorm
from robattr_cli.regularizers import NEEDS_CLEAN_GRAD, REGULARIZERS, CleanPass, RegSpec

STATUS_EVERY = 10  # steps between progress-bar refreshes (each one syncs the GPU)


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint.

    Attributes:
        epoch: epochs completed.
        step: optimiser steps taken in total.
        step_in_epoch: batches already consumed in the current, unfinished epoch.
        sums: running sums of the current epoch's statistics (see `train_step`).
        best_val_acc, best_epoch: best validation accuracy so far and its epoch (1-based).
        history: one record per finished epoch.
    """

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    best_val_acc: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Parts:
    """What one training run is made of (the module itself and its DDP wrapper `net`)."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    spec: RegSpec
    meta: dict[str, Any]


class StopTraining(Exception):
    """Raised inside the epoch loop when --max-steps is reached (after a checkpoint)."""


def run(cfg: TrainConfig, runtime: Runtime, run_dir: Path, resume: bool = False) -> dict:
    """Train a classifier as `cfg` says into `run_dir` (made by `start_run`); returns the
    summary also written to metrics.json."""
    data = {"data_seed": cfg.toy_seed}
    train_set = limit(
        build_dataset(cfg.dataset, cfg.data_root, "train", True, **data), cfg.limit_train
    )
    val_set = limit(
        build_dataset(cfg.dataset, cfg.data_root, "test", False, **data), cfg.limit_eval
    )
    parts = build_parts(cfg, runtime)
    model, optimizer, scheduler = parts.model, parts.optimizer, parts.scheduler

    progress = Progress()
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        progress = restore(ckpt, model, optimizer, scheduler, parts.scaler, runtime)
        log(f"resumed from {ckpt} (epoch {progress.epoch}, step {progress.step})")
    elif resume:
        log(f"[yellow]--resume: no checkpoint in {run_dir}; starting from scratch[/yellow]")
    n_images = {"train": len(train_set), "val": len(val_set)}  # recorded in metrics.json
    log(
        f"train {cfg.model} ({cfg.activation}) on {cfg.dataset}: {len(train_set)} train / "
        f"{len(val_set)} val images, regularizer {cfg.regularizer}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )

    started = time.perf_counter()
    if cfg.max_steps is not None and progress.step >= cfg.max_steps:
        log(f"--max-steps {cfg.max_steps} already reached: nothing left to train")
        return write_summary(run_dir, cfg, progress, runtime, started, n_images, "stopped")
    try:
        for epoch in range(progress.epoch, cfg.epochs):
            epoch_start = time.perf_counter()
            loader = train_loader(train_set, cfg, runtime, epoch, progress.step_in_epoch)
            train_stats = train_epoch(loader, cfg, runtime, parts, progress, run_dir, epoch)
            val_stats = evaluate(model, val_set, cfg, runtime)
            scheduler.step()
            record = {"epoch": epoch + 1, "step": progress.step, **train_stats, **val_stats}
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["seconds"] = time.perf_counter() - epoch_start
            progress.history.append(record)
            progress.epoch, progress.step_in_epoch, progress.sums = epoch + 1, 0, {}
            if val_stats["val_acc"] > progress.best_val_acc:
                progress.best_val_acc, progress.best_epoch = val_stats["val_acc"], epoch + 1
                checkpoint(run_dir, parts, progress, runtime, name="best")
            checkpoint(run_dir, parts, progress, runtime)
            log(format_record(record, cfg.epochs))
            write_summary(run_dir, cfg, progress, runtime, started, n_images, "running")
    except StopTraining:
        return write_summary(run_dir, cfg, progress, runtime, started, n_images, "stopped")
    return write_summary(run_dir, cfg, progress, runtime, started, n_images, "finished")


# --------------------------------------------------------------------------- the loop
def train_epoch(
    loader: DataLoader,
    cfg: TrainConfig,
    runtime: Runtime,
    parts: Parts,
    progress: Progress,
    run_dir: Path,
    epoch: int,
) -> dict[str, float]:
    """One pass over `loader` (possibly resumed mid-epoch); returns the epoch's means."""
    parts.net.train()
    generator = torch.Generator(device=runtime.device)
    sums = {k: torch.tensor(v, device=runtime.device) for k, v in progress.sums.items()}
    total = len(loader) + progress.step_in_epoch
    with make_progress() as bar:
        task = bar.add_task(
            f"epoch {epoch + 1}/{cfg.epochs}", total=total, completed=progress.step_in_epoch,
            status="",
        )  # fmt: skip
        for x, y in loader:
            x = x.to(runtime.device, non_blocking=True)
            y = y.to(runtime.device, non_blocking=True)
            generator.manual_seed(noise_seed(runtime, progress.step))
            stats = train_step(parts, x, y, cfg, runtime, generator)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0) + value
            progress.step += 1
            progress.step_in_epoch += 1
            if progress.step % STATUS_EVERY == 0 or progress.step_in_epoch == total:
                bar.update(task, completed=progress.step_in_epoch, status=status_line(sums))
            stop = cfg.max_steps is not None and progress.step >= cfg.max_steps
            if stop or (cfg.save_every and progress.step % cfg.save_every == 0):
                progress.sums = {k: float(v) for k, v in sums.items()}
                checkpoint(run_dir, parts, progress, runtime)
            if stop:
                log(f"stopped after --max-steps {cfg.max_steps} (a resumed run keeps this limit)")
                raise StopTraining
    return epoch_means(sums)


def train_step(
    parts: Parts,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    runtime: Runtime,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """CE(f(x), y) + regulariser, one optimiser step. Returns detached per-batch sums
    (n, correct, ce x n, and each regulariser term x n)."""
    net, model, optimizer, scaler = parts.net, parts.model, parts.optimizer, parts.scaler
    reuse_clean = cfg.regularizer in NEEDS_CLEAN_GRAD and not runtime.precision.enabled
    if reuse_clean:
        x = x.requires_grad_(True)
    with runtime.autocast():
        logits = net(x)
        ce = F.cross_entropy(logits, y)
    clean = CleanPass(x, logits) if reuse_clean else None
    with torch.autocast(device_type=runtime.device.type, enabled=False):
        reg = REGULARIZERS[cfg.regularizer](
            model, x.detach(), y, parts.spec, generator, clean=clean
        )
    loss = ce.float() + reg.penalty
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    n = torch.tensor(float(len(y)), device=x.device)
    stats = {"n": n, "correct": (logits.argmax(1) == y).sum().float(), "ce": ce.detach() * n}
    stats["reg"] = reg.penalty.detach() * n
    stats.update({k: v.detach() * n for k, v in reg.terms.items()})
    return stats


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, cfg: TrainConfig, runtime: Runtime) -> dict:
    """Validation accuracy and cross-entropy; each rank takes every world_size-th image and
    the sums are reduced, so every image counts exactly once."""
    model.eval()
    shard = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
    loader = DataLoader(
        shard, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        pin_memory=runtime.device.type == "cuda",
    )  # fmt: skip
    sums = torch.zeros(3, device=runtime.device)  # n, correct, ce sum
    for x, y in loader:
        x, y = x.to(runtime.device), y.to(runtime.device)
        with runtime.autocast():
            logits = model(x)
        sums += torch.stack(
            [
                torch.tensor(float(len(y)), device=runtime.device),
                (logits.argmax(1) == y).sum().float(),
                F.cross_entropy(logits.float(), y, reduction="sum"),
            ]
        )
    sums = distributed.all_reduce_mean(sums) * runtime.world_size
    model.train()
    n = max(sums[0].item(), 1.0)
    return {"val_acc": sums[1].item() / n, "val_ce": sums[2].item() / n}


# --------------------------------------------------------------------------- pieces
def build_parts(cfg: TrainConfig, runtime: Runtime) -> Parts:
    """Everything `train_step` needs, built from `cfg` in one place (`run`, and the bench
    in bench/robattr_train_step.py): the model on the device (DDP-wrapped as `net` under
    torchrun), optimiser, LR schedule, grad scaler, regulariser spec and checkpoint meta."""
    info = get_dataset_info(cfg.dataset)
    model = build_model(cfg.model, info.num_classes, cfg.activation, cfg.beta)
    if cfg.regularizer == "hessian":
        # Deviation: torch's batch_norm has no third derivative, so the official Hessian
        # baseline cannot train BN networks; the elementary-op BN computes the same maths.
        use_elementary_batchnorm(model)
    model = model.to(runtime.device)
    net = distributed.wrap_ddp(model, runtime.device)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.milestones), gamma=cfg.lr_gamma
    )
    scaler = make_grad_scaler(runtime.device, runtime.precision)
    spec = RegSpec(
        eps=cfg.eps,
        std=info.std,
        lambda_l2=cfg.lambda_l2,
        lambda_cos=cfg.lambda_cos,
        lambda_hessian=cfg.lambda_hessian,
        perturb=cfg.perturb,
        detach_clean_grad=cfg.detach_clean_grad,
    )
    meta = model_meta(cfg.model, info.num_classes, cfg.activation, cfg.beta, info)
    meta["regularizer"] = cfg.regularizer
    meta["toy_seed"] = cfg.toy_seed  # attack / eval rebuild the same test split from it
    meta["config"] = asdict(cfg)
    return Parts(model, net, optimizer, scheduler, scaler, spec, meta)


def limit(dataset: Dataset, n: int | None) -> Dataset:
    """A fixed random subset of `n` examples (seed 0, independent of --seed), or all."""
    if n is None or n >= len(dataset):
        return dataset
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return Subset(dataset, sorted(idx.tolist()))


def train_loader(
    dataset: Dataset, cfg: TrainConfig, runtime: Runtime, epoch: int, skip_batches: int
) -> DataLoader:
    """This rank's shuffled shard for `epoch` (order fixed by seed and epoch), without the
    first `skip_batches` batches (already trained on before an interruption)."""
    sampler = DistributedSampler(
        dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True,
        seed=runtime.seed,
    )  # fmt: skip
    sampler.set_epoch(epoch)
    indices = list(sampler)[skip_batches * cfg.batch_size :]
    workers_seed = torch.Generator().manual_seed(
        runtime.seed * 100_003 + runtime.rank * 1009 + epoch
    )
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=indices,
        num_workers=cfg.num_workers,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=False,
        generator=workers_seed,
    )


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD (momentum 0.9, Nesterov) as in the official `configure_optimizers`."""
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
    )


def noise_seed(runtime: Runtime, step: int) -> int:
    """Seed of the regulariser's generator at `step` on this rank."""
    return (runtime.seed * 1_000_003 + runtime.rank * 100_003 + step) % (2**63)


def checkpoint(
    run_dir: Path, parts: Parts, progress: Progress, runtime: Runtime, name: str | None = None
) -> None:
    """Rank 0 writes `checkpoints/step-*` (or `checkpoints/<name>`); all ranks wait."""
    if runtime.is_main:
        train_state = {
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict(),
            "rng": rng_state(),
            "progress": asdict(progress),
        }
        last = progress.history[-1] if progress.history else {}
        extra = {"epoch": progress.epoch, "val_acc": last.get("val_acc")}
        meta = {**parts.meta, **extra}
        save_checkpoint(
            run_dir, progress.step, parts.model.state_dict(), train_state, meta, name=name
        )
    distributed.barrier()


def restore(
    ckpt: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
) -> Progress:
    """Load weights and training state from `ckpt`; returns the saved progress."""
    model_state, train_state, _ = load_checkpoint(ckpt, map_location=runtime.device)
    model.load_state_dict(model_state)
    optimizer.load_state_dict(train_state["optimizer"])
    scheduler.load_state_dict(train_state["scheduler"])
    scaler.load_state_dict(train_state["scaler"])
    if runtime.world_size == 1:
        # Only rank 0's RNG is saved; under DDP each rank keeps its own seed + rank stream.
        set_rng_state(train_state["rng"])
    return Progress(**train_state["progress"])


def epoch_means(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-example means of the summed statistics (accuracy, CE, regulariser terms)."""
    values = {k: float(v) for k, v in sums.items()}
    n = max(values.pop("n", 0.0), 1.0)
    out = {"train_acc": values.pop("correct", 0.0) / n}
    out.update({f"train_{k}": v / n for k, v in values.items()})
    return out


def status_line(sums: dict[str, torch.Tensor]) -> str:
    means = epoch_means(sums)
    parts = [f"{k.removeprefix('train_')} {v:.4g}" for k, v in means.items() if k != "train_acc"]
    return " ".join(parts + [f"acc {means['train_acc']:.3f}"])


def format_record(record: dict[str, float], epochs: int) -> str:
    terms = " ".join(
        f"{k.removeprefix('train_')} {v:.4g}"
        for k, v in record.items()
        if k.startswith("train_") and k != "train_acc"
    )
    return (
        f"epoch {record['epoch']}/{epochs}: {terms} acc {record['train_acc']:.3f} | "
        f"val acc {record['val_acc']:.4f} ce {record['val_ce']:.4f} | {record['seconds']:.1f}s"
    )


def write_summary(
    run_dir: Path,
    cfg: TrainConfig,
    progress: Progress,
    runtime: Runtime,
    started: float,
    n_images: dict[str, int],
    status: str,
) -> dict:
    """metrics.json: status, the train / val image counts, best/final validation accuracy,
    per-epoch history."""
    last = progress.history[-1] if progress.history else {}
    summary = {
        "status": status,
        "epochs_done": progress.epoch,
        "steps": progress.step,
        "best_val_acc": progress.best_val_acc if progress.history else None,
        "best_epoch": progress.best_epoch or None,
        "final_val_acc": last.get("val_acc"),
        "regularizer": cfg.regularizer,
        "n_images": n_images,
        "seconds_this_session": time.perf_counter() - started,
        "world_size": runtime.world_size,
        "history": progress.history,
    }
    if runtime.device.type == "cuda":
        summary["peak_memory_mib"] = torch.cuda.max_memory_allocated(runtime.device) / 2**20
    if runtime.is_main:
        write_metrics(run_dir, summary)
    return summary
