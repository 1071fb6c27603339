"""ERM training of the classifier TLDR debiases (`tldr erm`, or inside `tldr retrain` when
no `--classifier` is given).

Plain cross-entropy on the training split with SGD + momentum at a constant learning
rate, with one of the recipes in `config.ERM_RECIPES`: the paper repo's `script.sh`
(1 epoch, lr 1e-4, wd 0.01, batch 32) or DFR's standard protocol (Waterbirds 100 epochs
lr 1e-3 wd 1e-3 batch 32; CelebA 50 epochs lr 1e-3 wd 1e-4 batch 128; augmentation).
The last epoch is kept (no model selection, so no group labels are used). A checkpoint
is written after every epoch and `--resume` continues from the latest one.

Training and evaluation see the same view of an image: the recipe's `preprocess` picks
both transforms and is recorded in the classifier's meta.json, from which every later
feature extraction takes it. The DFR recipes use DFR's `get_transform_cub` for every
dataset (RandomResizedCrop of the full image in training, Resize 256x256 -> CenterCrop 224
at evaluation), so `dfr-celeba` evaluates on the full image it was trained on, not on
TLDR's CelebA centre crop 178.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from labshared.console import log, make_progress
from labshared.data.group_shift import GroupShiftSplit, ImageDataset
from labshared.device import Runtime, make_grad_scaler
from labshared.runs import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_metrics,
)
from labshared.stats import BootstrapSpec
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
from tldr_cli.outputs import evaluate_methods, write_predictions
from tldr_cli.report import summary_table


def _loader(
    data: GroupShiftSplit, transform, batch_size: int, shuffle: bool, workers: int, gen=None
):
    return torch.utils.data.DataLoader(
        ImageDataset(data, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=gen,
        drop_last=False,
        persistent_workers=False,
    )


def train_erm(
    model: Classifier,
    train: GroupShiftSplit,
    recipe: ErmRecipe,
    runtime: Runtime,
    run_dir: Path,
    *,
    dataset_kind: str,
    num_workers: int = 0,
    resume: bool = False,
    meta: dict | None = None,
) -> Classifier:
    """Train `model` in place for `recipe.epochs` epochs; the final weights go to
    `run_dir/checkpoints/final` (a classifier folder `load_classifier` reads)."""
    device = runtime.device
    model.to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    scaler = make_grad_scaler(device, runtime.precision)
    gen = torch.Generator().manual_seed(runtime.seed)
    start_epoch = 0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state, train_state, ckpt_meta = load_checkpoint(ckpt, map_location=device)
        model.load_state_dict(state)
        opt.load_state_dict(train_state["optimizer"])
        gen.set_state(train_state["loader_rng"])
        set_rng_state(train_state["rng"])
        start_epoch = ckpt_meta["step"]
        log(f"resuming ERM from {ckpt} (epoch {start_epoch} done)")
    transform = classifier_transform(
        dataset_kind, model.arch, train=True, augment=recipe.augment, preprocess=recipe.preprocess
    )
    loader = _loader(train, transform, recipe.batch_size, True, num_workers, gen)
    labels = torch.as_tensor(train.label)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("ERM", total=recipe.epochs * len(loader), status="")
        progress.update(task, completed=start_epoch * len(loader))
        for epoch in range(start_epoch, recipe.epochs):
            model.train()
            total, n = 0.0, 0
            for x, idx in loader:
                x, y = x.to(device, non_blocking=True), labels[idx].to(device)
                with runtime.autocast():
                    loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += loss.item() * len(y)
                n += len(y)
                progress.update(task, advance=1, status=f"epoch {epoch + 1} loss {total / n:.3f}")
            save_checkpoint(
                run_dir,
                epoch + 1,
                model.state_dict(),
                {"optimizer": opt.state_dict(), "loader_rng": gen.get_state(), "rng": rng_state()},
                {"arch": model.arch, "num_classes": model.num_classes, "loss": total / max(n, 1)},
            )
    model.eval()
    save_classifier(
        Path(run_dir) / "checkpoints" / "final",
        model.cpu(),
        {
            "recipe": recipe.name,
            "preprocess": recipe.preprocess,
            "seconds": round(time.perf_counter() - t0, 1),
            **(meta or {}),
        },
    )
    return model


def run_erm(
    cfg: TLDRConfig, runtime: Runtime, run_dir: Path, *, resume: bool, use_cache: bool
) -> tuple[dict, str]:
    """`tldr erm`: train the classifier with the preset's recipe, then report its
    worst-group / average / class-balanced / plain accuracy on test, with 95 % intervals,
    and write its per-image predictions. The classifier folder is
    `run_dir/checkpoints/final` (pass the run folder to `--classifier`).

    Returns:
        (ERM's metrics, the printed table)."""
    splits = load_splits(cfg, ("train", "test"))
    train, test = splits["train"], splits["test"]
    model = build_classifier(cfg.arch, train.n_classes, cfg.backbone_weights)
    model = train_erm(
        model,
        train,
        cfg.recipe,
        runtime,
        run_dir,
        dataset_kind=dataset_kind(train),
        num_workers=cfg.num_workers,
        resume=resume,
        meta={"dataset": train.fingerprint},
    )
    final = Path(run_dir) / "checkpoints" / "final"
    handle = ClassifierHandle(
        model, {"path": str(final)}, file_digest(final / "model.safetensors"), cfg.recipe.preprocess
    )
    feats = classifier_features(handle, test, cfg, runtime, use_cache)
    outputs = {"ERM": scores(model.fc.to(runtime.device), feats)}
    spec = BootstrapSpec(seed=runtime.seed)
    metrics = evaluate_methods(outputs, test, train, spec)
    items = write_predictions(run_dir, test, outputs, train)
    write_metrics(run_dir, {
        "test": metrics, "bootstrap": spec.record("image"),
        "items": str(items.relative_to(run_dir)),
        "n_images": {"train": len(train), "test": len(test)},
        "recipe": cfg.recipe, "classifier": str(final),
    })  # fmt: skip
    return metrics["ERM"], summary_table(metrics, train.class_names, train.spurious_names)
