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
- State and resume: the training kit's `TrainState` (`labshared.training`): weights,
  optimizer, scheduler, grad-scaler, every rank's noise generator (seeded once from
  (seed, rank)) and global RNG, and the progress dict (epoch, step, position inside the
  epoch, running sums, history). The data order of an epoch is a function of (seed,
  epoch), so a mid-epoch resume skips exactly the batches already seen and ends with the
  weights of an uninterrupted run, also under torchrun. Ctrl-C / SIGTERM save the current
  step and stop (`Interrupt`); every `log_every` steps go to metrics.jsonl (`MetricLogger`)
  and the one progress display (`StepProgress`). The run folder and its config header
  come from `labshared.launch.start_run` (the CLI calls it), which also refuses a resume
  with other settings than the run's own.

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
from torch.utils.data import DataLoader, Dataset

from labshared import distributed
from labshared.console import log
from labshared.data.image_classification import build_dataset, get_dataset_info
from labshared.device import Runtime, make_grad_scaler
from labshared.training import Interrupt, MetricLogger, StepProgress, TrainState
from labshared.training.state import load_init_weights, restore_state, save_state, write_status
from robattr_cli.checks import check_data_root, validate_train
from robattr_cli.config import TrainConfig
from robattr_cli.model import build_model, model_meta, use_elementary_batchnorm
from robattr_cli.regularizers import NEEDS_CLEAN_GRAD, REGULARIZERS, CleanPass, RegSpec
from robattr_cli.train_data import evaluate, limit, steps_per_epoch, train_loader


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


def new_progress() -> dict[str, Any]:
    """Where training stands (`TrainState.progress`, saved in every checkpoint): epochs
    completed, optimiser steps in total, batches consumed in the unfinished epoch, running
    sums of its statistics (see `train_step`), best validation accuracy and its epoch
    (1-based), one record per finished epoch."""
    return {"epoch": 0, "step": 0, "step_in_epoch": 0, "sums": {}, "best_val_acc": -1.0,
            "best_epoch": 0, "history": []}  # fmt: skip


def check(cfg: TrainConfig) -> None:
    """Everything `run` needs, checked before a run folder is made: the config's values
    and the dataset's files (`--report-to`'s trackers: `RunFlags.start`)."""
    validate_train(cfg)
    check_data_root(cfg)


def run(
    cfg: TrainConfig,
    runtime: Runtime,
    run_dir: Path,
    resume: bool = False,
    *,
    init_from: Path | None = None,
    report_to: tuple[str, ...] = (),
    label: str = "robattr train",
) -> dict:
    """Train a classifier as `cfg` says into `run_dir` (made by `start_run`); returns the
    summary also written to metrics.json.

    Args:
        resume: continue from the run's latest checkpoint (`--resume`).
        init_from: a new run starts from these weights (`--init-from`, via `start_run`).
        report_to: trackers besides metrics.jsonl (`--report-to`, parsed).
        label: what the progress lines say, and the prefix of every other line (the
            demo trains several models at once into one log).

    Raises:
        Interrupted: SIGINT / SIGTERM; the step's checkpoint is saved first.
    """
    data = {"data_seed": cfg.toy_seed}
    train_set = limit(
        build_dataset(cfg.dataset, cfg.data_root, "train", True, **data), cfg.limit_train
    )
    val_set = limit(
        build_dataset(cfg.dataset, cfg.data_root, "test", False, **data), cfg.limit_eval
    )
    parts = build_parts(cfg, runtime)
    state = TrainState(
        parts.model, parts.optimizer, {"noise": noise_generator(runtime)}, parts.scheduler,
        parts.scaler, progress=new_progress(),
    )  # fmt: skip
    if resume:  # a checkpoint from before the kit is one error naming --init-from
        restore_state(run_dir, state, runtime)
    elif init_from is not None:
        load_init_weights(init_from, parts.model)
    n_images = {"train": len(train_set), "val": len(val_set)}  # recorded in metrics.json
    log(
        f"{label}: {cfg.model} ({cfg.activation}) on {cfg.dataset}: {len(train_set)} train / "
        f"{len(val_set)} val images, regularizer {cfg.regularizer}, "
        f"{sum(p.numel() for p in parts.model.parameters()) / 1e6:.2f} M parameters"
    )
    started = time.perf_counter()
    if cfg.max_steps is not None and state.step >= cfg.max_steps:
        log(f"--max-steps {cfg.max_steps} already reached: nothing left to train")
        return write_summary(run_dir, cfg, state.progress, runtime, started, n_images, "stopped")
    write_summary(run_dir, cfg, state.progress, runtime, started, n_images, "running")
    per_epoch = steps_per_epoch(len(train_set), cfg, runtime)
    total = cfg.epochs * per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    with (
        Interrupt() as interrupt,
        MetricLogger(run_dir, report_to, config=asdict(cfg),
                     resume_step=state.step if resume else None) as logger,
        StepProgress(total, state.step, label=label) as bar,
    ):  # fmt: skip
        loop = Loop(cfg, runtime, run_dir, parts, state, logger, bar, interrupt, started,
                    per_epoch=per_epoch, n_images=n_images)  # fmt: skip
        try:
            status = loop.epochs(train_set, val_set)
        except StopTraining:
            status = "stopped"
        summary = write_summary(run_dir, cfg, state.progress, runtime, started, n_images, status)
        logger.log_final(
            {k: summary[k] for k in ("best_val_acc", "final_val_acc") if summary[k] is not None},
            state.step,
        )
    return summary


# --------------------------------------------------------------------------- the loop
@dataclass
class Loop:
    """One session of a run's training loop: its parts and state, where it reports, and
    the running sums of the current epoch (tensors on the device, read at log steps)."""

    cfg: TrainConfig
    runtime: Runtime
    run_dir: Path
    parts: Parts
    state: TrainState
    logger: MetricLogger
    bar: StepProgress
    interrupt: Interrupt
    started: float
    per_epoch: int = 1
    n_images: dict[str, int] = field(default_factory=dict)  # train / val counts (metrics.json)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    status: str = ""
    saved_at: int = -1
    images: int = 0  # images trained on (all ranks) since the last logged step
    last_log: float = field(default_factory=time.perf_counter)

    def epochs(self, train_set: Dataset, val_set: Dataset) -> str:
        """Train the remaining epochs; returns the run's status ("finished")."""
        cfg, progress = self.cfg, self.state.progress
        for epoch in range(progress["epoch"], cfg.epochs):
            epoch_start = time.perf_counter()
            loader = train_loader(train_set, cfg, self.runtime, epoch, progress["step_in_epoch"])
            train_stats = self.train_epoch(loader)
            val_stats = evaluate(self.parts.model, val_set, cfg, self.runtime)
            self.parts.scheduler.step()
            record = {"epoch": epoch + 1, "step": progress["step"], **train_stats, **val_stats}
            record["lr"] = self.parts.optimizer.param_groups[0]["lr"]
            record["seconds"] = time.perf_counter() - epoch_start
            progress["history"].append(record)
            progress.update(epoch=epoch + 1, step_in_epoch=0, sums={})
            self.sums = {}
            self.logger.log(progress["step"], val_stats, epoch=epoch + 1)
            if val_stats["val_acc"] > progress["best_val_acc"]:
                progress["best_val_acc"], progress["best_epoch"] = val_stats["val_acc"], epoch + 1
                self.save(name="best")
            self.save()
            log(f"{self.bar.label}: {format_record(record, cfg.epochs)}")
            write_summary(
                self.run_dir, cfg, progress, self.runtime, self.started, self.n_images, "running"
            )
            self.stop_if_interrupted()
        return "finished"

    def train_epoch(self, loader: DataLoader) -> dict[str, float]:
        """One pass over `loader` (possibly resumed mid-epoch); returns the epoch's means."""
        device, progress = self.runtime.device, self.state.progress
        self.parts.net.train()
        self.sums = {k: torch.tensor(v, device=device) for k, v in progress["sums"].items()}
        noise = self.state.generators["noise"]
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            stats = train_step(self.parts, x, y, self.cfg, self.runtime, noise)
            for key, value in stats.items():
                self.sums[key] = self.sums.get(key, 0) + value
            progress["step"] += 1
            progress["step_in_epoch"] += 1
            self.images += len(y) * self.runtime.world_size
            self.end_of_step()
        return epoch_means(self.sums)

    def end_of_step(self) -> None:
        """Log, checkpoint, stop at --max-steps, or stop on a signal (the same point on
        every rank: the interrupt check is collective)."""
        cfg, step = self.cfg, self.state.step
        if step % cfg.log_every == 0:
            self.log_step()
        self.bar.update(step, self.status)
        stop = cfg.max_steps is not None and step >= cfg.max_steps
        if stop or (cfg.save_every and step % cfg.save_every == 0):
            self.save()
        if stop:
            log(f"stopped after --max-steps {cfg.max_steps} (a resumed run keeps this limit)")
            raise StopTraining
        self.stop_if_interrupted()

    def log_step(self) -> None:
        """One line of metrics.jsonl: this epoch's running means so far (so a resumed run
        logs the same values), the learning rate and the throughput since the last line."""
        progress, now = self.state.progress, time.perf_counter()
        means = epoch_means(self.sums)
        values = {**means, "lr": self.parts.optimizer.param_groups[0]["lr"],
                  "img_per_s": self.images / max(now - self.last_log, 1e-9)}  # fmt: skip
        epoch = progress["epoch"] + progress["step_in_epoch"] / self.per_epoch
        self.logger.log(progress["step"], values, epoch=round(epoch, 4))
        self.status = status_line(means)
        self.images, self.last_log = 0, now

    def save(self, name: str | None = None) -> None:
        """Checkpoint the state (collective): `checkpoints/step-*`, or `checkpoints/<name>`."""
        progress = self.state.progress
        progress["sums"] = {k: float(v) for k, v in self.sums.items()}
        last = progress["history"][-1] if progress["history"] else {}
        meta = {**self.parts.meta, "epoch": progress["epoch"], "val_acc": last.get("val_acc")}
        save_state(self.run_dir, self.state, self.runtime, meta=meta, name=name)
        if name is None:
            self.saved_at = self.state.step

    def stop_if_interrupted(self) -> None:
        """On SIGINT / SIGTERM (any rank): save this step, mark the run, raise."""
        if not self.interrupt.requested(self.runtime):
            return
        step = self.state.step
        if self.saved_at != step:
            self.save()
        write_status(self.run_dir, "interrupted", step=step, steps=step)
        raise self.interrupt.stop(self.run_dir, step)


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


def noise_generator(runtime: Runtime) -> torch.Generator:
    """The regulariser's noise generator of this rank, seeded once from (seed, rank); the
    checkpoints save its state, so a resumed run continues its stream."""
    seed = (runtime.seed * 1_000_003 + runtime.rank * 100_003) % (2**63)
    return torch.Generator(device=runtime.device).manual_seed(seed)


def epoch_means(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-example means of the summed statistics (accuracy, CE, regulariser terms)."""
    values = {k: float(v) for k, v in sums.items()}
    n = max(values.pop("n", 0.0), 1.0)
    out = {"train_acc": values.pop("correct", 0.0) / n}
    out.update({f"train_{k}": v / n for k, v in values.items()})
    return out


def status_line(means: dict[str, float]) -> str:
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
    progress: dict[str, Any],
    runtime: Runtime,
    started: float,
    n_images: dict[str, int],
    status: str,
) -> dict:
    """metrics.json: status and step (what `--resume` reads), the train / val image counts,
    best/final validation accuracy, per-epoch history."""
    history = progress["history"]
    last = history[-1] if history else {}
    summary = {
        "status": status,
        "step": progress["step"],
        "epochs_done": progress["epoch"],
        "steps": progress["step"],
        "best_val_acc": progress["best_val_acc"] if history else None,
        "best_epoch": progress["best_epoch"] or None,
        "final_val_acc": last.get("val_acc"),
        "regularizer": cfg.regularizer,
        "n_images": n_images,
        "seconds_this_session": time.perf_counter() - started,
        "world_size": runtime.world_size,
        "history": history,
    }
    if runtime.device.type == "cuda":
        summary["peak_memory_mib"] = torch.cuda.max_memory_allocated(runtime.device) / 2**20
    write_status(run_dir, status, **{k: v for k, v in summary.items() if k != "status"})
    return summary
