"""Last-layer retraining: TLDR (text) and DFR (group-labelled validation images), with ERM
evaluated beside them (`TLDR:last_layer_retrain/tldr.py:L244-337`, `TLDR:utils/trainer.py`).

TLDR: logits = Linear_new(ReLU(P(e))) with a freshly initialised Linear(D_phi, C), the
projector and backbone frozen, cross-entropy on group-balanced batches of the text pairs,
AdamW (lr 1e-4, wd 1e-4), batch 128, 1 epoch (`script.sh`); the last epoch is kept, so no
group-labelled image is used. At test time the new head reads phi(image).

Randomness: each method draws from its own `torch.Generator`, seeded with `--seed`:
TLDR's drives the head's initialisation, the balanced sampling and the template draws;
DFR's its validation splits, balanced subsamples and liblinear seeds. So DFR's figures
are the same with `--method dfr` and `--method both` (TLDR running first takes nothing
from DFR's stream). Deviation: the official code re-seeds in nearly every constructor
(`seed_randomness`), so its results depend on how many objects were built.

Word lists are matched to the dataset's labels by name (`labels.align_wordlists`) before
anything is built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labshared.cache import cached_tensors
from labshared.console import log
from labshared.device import Runtime
from labshared.runs import atomic_save_safetensors, to_jsonable, write_metrics
from labshared.stats import BootstrapSpec
from labshared.training import MetricLogger, StepProgress, TrainState
from tldr_cli.config import TLDRConfig, needs_projector
from tldr_cli.dfr import LinearModel, run_dfr
from tldr_cli.features import load_splits
from tldr_cli.heads import StandardisedLinear, save_dfr_head, save_tldr_head, scores
from tldr_cli.inputs import check_run
from tldr_cli.labels import align_wordlists
from tldr_cli.outputs import evaluate_methods, write_predictions
from tldr_cli.pipeline import embed_space, prepare
from tldr_cli.projector import Projector
from tldr_cli.report import bar_chart, loss_chart, summary_table
from tldr_cli.textdata import (
    TextPairs,
    build_pairs,
    caption_templates,
    encode_word_templates,
    epoch_batches,
    pair_embeddings,
)
from tldr_cli.wordlists import load_wordlists


def new_head(feature_dim: int, n_classes: int, generator: torch.Generator) -> nn.Linear:
    """nn.Linear's default (Kaiming-uniform) initialisation, drawn from `generator`."""
    head = nn.Linear(feature_dim, n_classes)
    bound = 1.0 / feature_dim**0.5
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    return head


def head_steps_per_epoch(pairs: TextPairs, batch_size: int) -> int:
    """Batches of one epoch of group-balanced text pairs (`textdata.epoch_batches`)."""
    _, counts = torch.unique(pairs.group, return_counts=True)
    return -(-int(counts.min()) * len(counts) // batch_size)


def train_text_head(
    pairs: TextPairs,
    word_emb: torch.Tensor,
    projector: Projector,
    n_classes: int,
    *,
    lr: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    runtime: Runtime,
    logger: MetricLogger | None = None,
    template_draw: str = "all",
    normalize: bool = False,
) -> tuple[nn.Linear, list[float]]:
    """Train a fresh head on projected text pairs; returns (head, mean loss per epoch).

    Every step goes to `logger` (the retrain run's metrics.jsonl and `--report-to`; None:
    not logged, as in the benches). The
    head's state is the kit's `TrainState`, but it is never checkpointed: it trains in
    seconds inside `tldr retrain` (no `--resume`), and a rerun of an interrupted retrain
    takes the ERM classifier, features and embeddings from the cache.
    """
    device = runtime.device
    projector = projector.to(device)
    feature_dim = projector.linear.out_features
    head = new_head(feature_dim, n_classes, generator).to(device)
    state = TrainState(
        head,
        torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay),
        {"data": generator},
        progress={"step": 0, "epoch": 0, "epoch_losses": []},
    )
    word_emb = word_emb.to(device)
    t_idx, s_idx, labels = (pairs.t_idx.to(device), pairs.s_idx.to(device),
                            pairs.label.to(device))  # fmt: skip
    n_templates = word_emb.shape[1]
    per_epoch = head_steps_per_epoch(pairs, batch_size)
    with StepProgress(epochs * per_epoch, label="TLDR head") as bar:
        for epoch in range(epochs):
            total, n = 0.0, 0
            batches = epoch_batches(pairs, batch_size, generator, n_templates, template_draw)
            for b, (idx, tmpl) in enumerate(batches, 1):
                t0 = time.perf_counter()
                idx, tmpl = idx.to(device), tmpl.to(device)
                e = pair_embeddings(word_emb, t_idx[idx], s_idx[idx], tmpl, normalize=normalize)
                with runtime.autocast():
                    logits = head(projector(e))
                loss = nn.functional.cross_entropy(logits.float(), labels[idx])
                state.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                state.optimizer.step()
                value = float(loss.item())
                total += value * len(idx)
                n += len(idx)
                state.progress["step"] += 1
                seconds = time.perf_counter() - t0
                if logger is not None:
                    logger.log(
                        state.step,
                        {"loss": value, "lr": state.optimizer.param_groups[0]["lr"],
                         "pairs_per_s": round(len(idx) / seconds, 1) if seconds > 0 else None},
                        epoch=round(epoch + b / per_epoch, 4),
                    )  # fmt: skip
                bar.update(state.step, f"epoch {epoch + 1} loss {total / n:.3f}")
            state.progress["epoch"] = epoch + 1
            state.progress["epoch_losses"].append(total / max(n, 1))
    return head.eval(), state.progress["epoch_losses"]


def run_dfr_baseline(ctx, generator: torch.Generator) -> tuple[LinearModel, dict]:
    """DFR^Val_Tr on the cached classifier features; returns (the fitted model, info)."""
    t0 = time.perf_counter()
    val = ctx.splits["val"]
    model = run_dfr(
        ctx.features["train"].numpy(),
        ctx.features["val"].numpy(),
        val.label,
        val.group,
        generator,
        c_grid=ctx.cfg.dfr_c_grid,
        num_retrains=ctx.cfg.dfr_retrains,
    )
    info = {**model.info, "seconds": round(time.perf_counter() - t0, 2)}
    log(f"DFR: C={model.info['C']} ({info['seconds']} s)")
    return model, info


def method_generator(seed: int) -> torch.Generator:
    """A fresh generator per method, so one method's draws never shift another's."""
    return torch.Generator().manual_seed(seed)


def check(cfg: TLDRConfig) -> None:
    """Everything `run` reads (words unless --method dfr, classifier, gap pairs, weights),
    validated before the run folder exists."""
    check_run(cfg, "retrain")


def run(
    cfg: TLDRConfig,
    runtime: Runtime,
    run_dir: Path,
    *,
    use_cache: bool,
    report_to: tuple[str, ...] = (),
):
    """`tldr retrain`: prepare (classifier, features, CLIP, gap, projector), train the
    TLDR head and/or DFR (`cfg.method`), evaluate ERM and them on test, write metrics,
    table and chart. `cfg` has passed ``check`` (word
    lists present and none empty when TLDR is fitted). The head's steps and the final
    test metrics go to the run's metrics.jsonl and the `--report-to` trackers."""
    run_dir = Path(run_dir)
    with MetricLogger(run_dir, report_to, config=to_jsonable(cfg)) as logger:
        results, info, text = _retrain(cfg, runtime, run_dir, use_cache, logger)
        logger.log_final({"test": results}, step=info.get("tldr", {}).get("steps", 0))
    return results, text


def _retrain(cfg: TLDRConfig, runtime: Runtime, run_dir: Path, use_cache: bool, logger):
    """The body of `run`; returns (results, info, printed text)."""
    wl = load_wordlists(cfg.words) if needs_projector(cfg, "retrain") else None
    splits = load_splits(cfg, ("train",))
    if wl is not None:  # by name, before any model is built
        train = splits["train"]
        wl = align_wordlists(wl, train.class_names, train.spurious_names, cfg.words, train.dataset)
    ctx = prepare(cfg, runtime, use_cache, with_projector=wl is not None, splits=splits)
    train, test = ctx.splits["train"], ctx.splits["test"]
    # method -> (prediction, score) of every test image
    preds = {"ERM": scores(ctx.classifier.model.fc, ctx.features["test"])}
    info: dict[str, Any] = {"classifier": ctx.classifier.meta}
    if ctx.projector is not None:
        info["gap_norm"] = float(ctx.gap.norm())
        info["projector_r2_train"] = ctx.projector_r2()
    timings: dict[str, float] = {}
    if wl is not None:
        pairs = build_pairs(wl)
        templates = caption_templates(cfg.templates)
        spec = {"clip": ctx.clip.ident, "words": pairs.words, "templates": templates,
                "tf32": runtime.tf32}  # fmt: skip
        word_emb = cached_tensors(
            "tldr-text",
            spec,
            lambda: {
                "emb": encode_word_templates(
                    lambda t: ctx.clip.encode_texts(t, runtime.device), pairs.words, templates
                )
            },
            enabled=use_cache,
        )["emb"]
        word_emb = embed_space(word_emb, cfg)
        t0 = time.perf_counter()
        head, losses = train_text_head(
            pairs,
            word_emb,
            ctx.projector,
            train.n_classes,
            lr=cfg.head_lr,
            weight_decay=cfg.head_weight_decay,
            batch_size=cfg.head_batch_size,
            epochs=cfg.head_epochs,
            generator=method_generator(runtime.seed),
            runtime=runtime,
            logger=logger,
            template_draw=cfg.template_draw,
            normalize=cfg.preprocess_embed == "clip_normalize",
        )
        timings["tldr_train_s"] = round(time.perf_counter() - t0, 2)
        preds["TLDR"] = scores(head, ctx.features["test"])
        save_tldr_head(run_dir, head)  # reloaded by `heads.load_head(run_dir, "TLDR")`
        atomic_save_safetensors(
            run_dir / "checkpoints" / "projector.safetensors", ctx.projector.state_tensors()
        )
        info["tldr"] = {
            "pairs": len(pairs),
            "words": len(pairs.words),
            "epoch_losses": losses,
            "steps": cfg.head_epochs * head_steps_per_epoch(pairs, cfg.head_batch_size),
            "templates": cfg.templates,
            "preprocess_embed": cfg.preprocess_embed,
            "group_pairs": torch.bincount(pairs.group).tolist(),
            # label i of the dataset <- list name (matched by name, labels.py)
            "class_lists": list(wl.classes),
            "spurious_lists": list(wl.spurious),
        }
    if cfg.method in ("dfr", "both"):
        dfr, info["dfr"] = run_dfr_baseline(ctx, method_generator(runtime.seed))
        save_dfr_head(run_dir, dfr)  # reloaded by `heads.load_head(run_dir, "DFR")`
        head = StandardisedLinear(dfr.mean, dfr.scale, dfr.coef, dfr.intercept)
        preds["DFR"] = scores(head, ctx.features["test"])
    spec = BootstrapSpec(seed=runtime.seed)
    results = evaluate_methods(preds, test, train, spec)
    items = write_predictions(run_dir, test, preds, train)
    table = summary_table(results, train.class_names, train.spurious_names)
    chart = bar_chart(results, run_dir / "figures" / "accuracy.png", f"{cfg.name}: test accuracy")
    if "tldr" in info:
        info["tldr"]["loss_figure"] = str(
            loss_chart(info["tldr"]["epoch_losses"], run_dir / "figures" / "tldr_head_loss.png")
        )
    write_metrics(run_dir, {
        "test": results, "bootstrap": spec.record("image"),
        "items": str(items.relative_to(run_dir)),
        "n_images": {name: len(split) for name, split in ctx.splits.items()},
        "info": info, "timings": timings, "figure": str(chart),
    })  # fmt: skip
    return results, info, table + "\n" + diagnostics(info)


def diagnostics(info: dict[str, Any]) -> str:
    """What the table alone does not say: how much of the classifier's feature space the
    projector reaches, and whether the TLDR head converged."""
    lines = []
    if "projector_r2_train" in info:
        lines.append(
            f"projector R^2 on the training images: {info['projector_r2_train']:.3f} "
            f"(|gap| {info['gap_norm']:.2f})"
        )
    if "tldr" in info:
        t, losses = info["tldr"], info["tldr"]["epoch_losses"]
        lines.append(
            f"TLDR head: {t['pairs']} text pairs ({t['words']} words, {t['templates']} "
            f"templates), loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} epochs "
            f"({t['loss_figure']})"
        )
    return "\n".join(lines)
