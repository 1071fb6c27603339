"""ERM training of the classifier TLDR debiases (`tldr erm`, or inside `tldr retrain` when
no `--classifier` is given).

Plain cross-entropy on the training split with SGD + momentum at a constant learning
rate, with one of the recipes in `config.ERM_RECIPES`: the paper repo's `script.sh`
(1 epoch, lr 1e-4, wd 0.01, batch 32) or DFR's standard protocol (Waterbirds 100 epochs
lr 1e-3 wd 1e-3 batch 32; CelebA 50 epochs lr 1e-3 wd 1e-4 batch 128; augmentation).
The last epoch is kept (no model selection, so no group labels are used).

The loop is built from the training kit (`labshared.training`): the resumable state is a
`TrainState` (model, optimizer, GradScaler, the data-order generator, the global RNG and
the loop's position), saved after every epoch and, on Ctrl-C / SIGTERM, at the current
batch; `--resume` continues from the latest checkpoint. Each epoch's order is drawn from
the generator at the epoch's start (the state saved in the checkpoint), so a resume in
the middle of an epoch rebuilds the same permutation and loads only the batches not yet
trained on. With `num_workers=0` a resumed run ends with exactly the weights of an
uninterrupted one; with workers, see the README (random augmentations drawn in workers).

Training and evaluation see the same view of an image: the recipe's `preprocess` picks
both transforms and is recorded in the classifier's meta.json, from which every later
feature extraction takes it. The DFR recipes use DFR's `get_transform_cub` for every
dataset (RandomResizedCrop of the full image in training, Resize 256x256 -> CenterCrop 224
at evaluation), so `dfr-celeba` evaluates on the full image it was trained on, not on
TLDR's CelebA centre crop 178.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path

import torch
from torch import nn

from labshared.data.group_shift import GroupShiftSplit, ImageDataset
from labshared.device import Runtime, make_grad_scaler
from labshared.errors import ConfigError
from labshared.launch import read_header
from labshared.runs import latest_checkpoint, to_jsonable, write_metrics
from labshared.stats import BootstrapSpec
from labshared.threads import pinned_threads
from labshared.training import (
    Interrupt,
    Interrupted,
    MetricLogger,
    StepProgress,
    TrainState,
    load_init_weights,
    restore_state,
    save_state,
    write_status,
)
from labshared.training.state import init_source
from tldr_cli.classifier import (
    Classifier,
    build_classifier,
    classifier_transform,
    save_classifier,
)
from tldr_cli.config import ErmRecipe, TLDRConfig
from tldr_cli.features import (
    ClassifierHandle,
    classifier_features,
    dataset_kind,
    file_digest,
    load_splits,
)
from tldr_cli.heads import scores
from tldr_cli.inputs import check_run
from tldr_cli.outputs import evaluate_methods, write_predictions
from tldr_cli.report import summary_table


def _ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers are in the terminal's process group, so Ctrl-C reaches them too;
    a worker killed by it makes the main process fail before it can save. Only the main
    process acts on the signal (`Interrupt`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Batches in one epoch (the last one may be short: drop_last=False)."""
    return math.ceil(n_images / batch_size)


def saved_step(run_dir: Path) -> int:
    """The step of the checkpoint `--resume` continues from (0: none yet); the step log is
    cut back to it, so metrics.jsonl stays one history."""
    ckpt = latest_checkpoint(run_dir)
    return int(json.loads((ckpt / "meta.json").read_text())["step"]) if ckpt else 0


def check_init_from(source: str | Path, cfg: TLDRConfig) -> None:
    """Refuse `--init-from` weights of another architecture before the run folder exists:
    our checkpoints name theirs in meta.json (a bare weights file is checked on loading).

    Raises:
        ConfigError: the checkpoint's architecture is not `cfg.arch`.
    """
    meta = init_source(Path(source)).parent / "meta.json"
    arch = json.loads(meta.read_text()).get("arch") if meta.is_file() else None
    if arch is not None and arch != cfg.arch:
        raise ConfigError(
            f"--init-from {source}: a {arch} checkpoint, but this run trains {cfg.arch}; "
            f"pass --arch {arch} or a {cfg.arch} checkpoint"
        )


def _epoch_order(state: TrainState, n: int, batch_size: int) -> tuple[list[int], int]:
    """The indices still to train on in this epoch, and the seed of its loader.

    Both are drawn from the data generator as it stood at the epoch's start, as torch's
    `DataLoader(shuffle=True, generator=...)` draws them (its workers' base seed, then its
    `RandomSampler`), so the order is the one `tldr erm` trained with before (same weights,
    measured with num_workers=0, with and without augmentation). A run resumed in the
    middle of an epoch redraws the same permutation from the state saved at the epoch's
    start and skips the batches already done without loading them.
    """
    gen, progress = state.generators["data"], state.progress
    if progress["batch"] == 0:
        progress["epoch_rng"] = gen.get_state()
    else:
        gen.set_state(progress["epoch_rng"].cpu())
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=gen))
    perm = list(torch.utils.data.RandomSampler(range(n), generator=gen))  # all of its draws
    return perm[progress["batch"] * batch_size :], seed


def _loader(dataset: ImageDataset, order: list[int], batch_size: int, workers: int, seed: int):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),  # workers' seeds; not the global RNG
        worker_init_fn=_ignore_sigint if workers else None,
        drop_last=False,
        persistent_workers=False,
    )


def _stop(interrupt: Interrupt, run_dir: Path, step: int, cached: bool) -> Interrupted:
    """The error that ends an interrupted run: the resume command of a `tldr erm` run, or,
    for the cached ERM of `retrain` / `filter`, the advice to rerun the same command."""
    if not cached:
        return interrupt.stop(run_dir, step)
    name = signal.Signals(interrupt.signum or signal.SIGINT).name
    return Interrupted(
        f"{name}: ERM training stopped at step {step}, checkpoint saved in {run_dir}; run the "
        "same command again to continue it",
        interrupt.signum or signal.SIGINT,
    )


def _start(
    state: TrainState, run_dir: Path, runtime: Runtime, *, resume: bool, init_from, cached: bool
) -> None:
    """Restore the latest checkpoint (`--resume`; the cache folder of retrain / filter
    when one is there), or load `--init-from` weights into a new run."""
    wanted = resume and (not cached or latest_checkpoint(run_dir) is not None)
    if wanted and restore_state(run_dir, state, runtime):
        return
    if init_from is not None:
        load_init_weights(init_from, state.module)


def train_erm(
    model: Classifier, train: GroupShiftSplit, recipe: ErmRecipe, runtime: Runtime, run_dir: Path,
    **kwargs,
) -> Classifier:  # fmt: skip
    """`_train_erm`; the toy CNN on the CPU trains at `labshared.threads.TOY_FIT_THREADS`
    threads whatever the caller set, so the toy demo's ERM weights (and figures) do not
    depend on the thread count (conv weight gradients are reduced per thread). Other
    models keep the caller's threads: pinning a ResNet-50 to 2 would slow a big machine."""
    pin = model.arch == "toy-cnn" and runtime.device.type == "cpu"
    with pinned_threads() if pin else contextlib.nullcontext():
        return _train_erm(model, train, recipe, runtime, run_dir, **kwargs)


def _train_erm(
    model: Classifier,
    train: GroupShiftSplit,
    recipe: ErmRecipe,
    runtime: Runtime,
    run_dir: Path,
    *,
    dataset_kind: str,
    logger: MetricLogger | None = None,
    num_workers: int = 0,
    resume: bool = False,
    init_from: Path | None = None,
    cached: bool = False,
    meta: dict | None = None,
) -> Classifier:
    """Train `model` in place for `recipe.epochs` epochs; the final weights go to
    `run_dir/checkpoints/final` (a classifier folder `load_classifier` reads).

    Args:
        logger: the run's step log (metrics.jsonl and the `--report-to` trackers); None:
            metrics.jsonl of `run_dir` alone (the cache folder of retrain / filter).
        init_from: `--init-from` weights, loaded when no checkpoint is restored.
        cached: `run_dir` is the ERM cache folder of retrain / filter, not a run folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # a bare folder when called directly
    device = runtime.device
    model.to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    progress = {"step": 0, "epoch": 0, "batch": 0, "loss_sum": 0.0, "seen": 0,
                "epoch_losses": []}  # fmt: skip
    state = TrainState(
        model,
        opt,
        {"data": torch.Generator().manual_seed(runtime.seed)},
        scaler=make_grad_scaler(device, runtime.precision),
        progress=progress,
    )
    _start(state, run_dir, runtime, resume=resume, init_from=init_from, cached=cached)
    transform = classifier_transform(
        dataset_kind, model.arch, train=True, augment=recipe.augment, preprocess=recipe.preprocess
    )
    dataset, labels = ImageDataset(train, transform), torch.as_tensor(train.label)
    per_epoch = steps_per_epoch(len(dataset), recipe.batch_size)
    ckpt_meta = {"arch": model.arch, "num_classes": model.num_classes}
    t0 = time.perf_counter()
    with (
        contextlib.ExitStack() as stack,
        Interrupt() as interrupt,
        StepProgress(recipe.epochs * per_epoch, state.step, label="tldr erm") as bar,
    ):
        if logger is None:
            logger = stack.enter_context(MetricLogger(run_dir, resume_step=state.step))
        while state.progress["epoch"] < recipe.epochs:
            order, seed = _epoch_order(state, len(dataset), recipe.batch_size)
            model.train()
            for x, idx in _loader(dataset, order, recipe.batch_size, num_workers, seed):
                bar.update(state.step, _step(state, runtime, x, labels[idx], logger, per_epoch))
                saved = state.progress["batch"] == per_epoch and _end_epoch(
                    state, run_dir, runtime, ckpt_meta
                )
                if interrupt.requested(runtime):
                    if not saved:
                        save_state(run_dir, state, runtime, meta=ckpt_meta)
                    write_status(run_dir, "interrupted", step=state.step)
                    raise _stop(interrupt, run_dir, state.step, cached)
    model.eval()
    save_classifier(
        run_dir / "checkpoints" / "final",
        model.cpu(),
        {
            "recipe": recipe.name,
            "preprocess": recipe.preprocess,
            "seconds": round(time.perf_counter() - t0, 1),
            **(meta or {}),
        },
    )
    return model


def _step(state: TrainState, runtime: Runtime, x, y, logger: MetricLogger, per_epoch: int) -> str:
    """One optimizer step on a batch; the loop's position and the step log follow it.
    Returns the progress display's status (epoch, running mean loss)."""
    t0 = time.perf_counter()
    model, opt, scaler = state.module, state.optimizer, state.scaler
    x, y = x.to(runtime.device, non_blocking=True), y.to(runtime.device)
    with runtime.autocast():
        loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    value = float(loss.item())
    p = state.progress
    p["step"] += 1
    p["batch"] += 1
    p["loss_sum"] += value * len(y)
    p["seen"] += len(y)
    seconds = time.perf_counter() - t0
    logger.log(
        state.step,
        {"loss": value, "lr": opt.param_groups[0]["lr"],
         "images_per_s": round(len(y) / seconds, 1) if seconds > 0 else None},
        epoch=round(p["epoch"] + p["batch"] / per_epoch, 4),
    )  # fmt: skip
    return f"epoch {p['epoch'] + 1} loss {p['loss_sum'] / p['seen']:.3f}"


def _end_epoch(state: TrainState, run_dir: Path, runtime: Runtime, meta: dict) -> bool:
    """Close the epoch and write its checkpoint (the per-epoch cadence); returns True."""
    p = state.progress
    p["epoch_losses"].append(p["loss_sum"] / max(p["seen"], 1))
    p.update(epoch=p["epoch"] + 1, batch=0, loss_sum=0.0, seen=0)
    save_state(run_dir, state, runtime, meta={**meta, "loss": p["epoch_losses"][-1]})
    return True


def check(cfg: TLDRConfig, init_from: Path | None = None) -> None:
    """Everything `run` reads (dataset, ImageNet weights, `--init-from`'s architecture),
    validated before the run folder exists."""
    if init_from is not None:
        check_init_from(init_from, cfg)
    check_run(cfg, "erm")


def run(
    cfg: TLDRConfig,
    runtime: Runtime,
    run_dir: Path,
    *,
    resume: bool,
    use_cache: bool,
    init_from: Path | None = None,
    report_to: tuple[str, ...] = (),
) -> tuple[dict, str]:
    """`tldr erm`: train the classifier with the preset's recipe, then report its
    worst-group / average / class-balanced / plain accuracy on test, with 95 % intervals,
    and write its per-image predictions. The classifier folder is
    `run_dir/checkpoints/final` (pass the run folder to `--classifier`).

    Returns:
        (ERM's metrics, the printed table)."""
    run_dir = Path(run_dir)
    splits = load_splits(cfg, ("train", "test"))
    train, test = splits["train"], splits["test"]
    model = build_classifier(cfg.arch, train.n_classes, cfg.backbone_weights)
    if resume and init_from is None:  # a run started with --init-from, no checkpoint yet
        init_from = read_header(run_dir).get("init_from")
    start = saved_step(run_dir) if resume else None
    write_status(run_dir, "running", step=start or 0)
    with MetricLogger(run_dir, report_to, config=to_jsonable(cfg), resume_step=start) as logger:
        model = train_erm(
            model,
            train,
            cfg.recipe,
            runtime,
            run_dir,
            logger=logger,
            dataset_kind=dataset_kind(train),
            num_workers=cfg.num_workers,
            resume=resume,
            init_from=init_from,
            meta={"dataset": train.fingerprint},
        )
        final = run_dir / "checkpoints" / "final"
        handle = ClassifierHandle(
            model,
            {"path": str(final)},
            file_digest(final / "model.safetensors"),
            cfg.recipe.preprocess,
        )
        feats = classifier_features(handle, test, cfg, runtime, use_cache)
        outputs = {"ERM": scores(model.fc.to(runtime.device), feats)}
        spec = BootstrapSpec(seed=runtime.seed)
        metrics = evaluate_methods(outputs, test, train, spec)
        items = write_predictions(run_dir, test, outputs, train)
        steps = cfg.recipe.epochs * steps_per_epoch(len(train), cfg.recipe.batch_size)
        logger.log_final({"test": metrics}, step=steps)
    write_metrics(run_dir, {
        "test": metrics, "bootstrap": spec.record("image"),
        "items": str(items.relative_to(run_dir)),
        "n_images": {"train": len(train), "test": len(test)},
        "recipe": cfg.recipe, "classifier": str(final), "status": "finished", "step": steps,
    })  # fmt: skip
    return metrics["ERM"], summary_table(metrics, train.class_names, train.spurious_names)
