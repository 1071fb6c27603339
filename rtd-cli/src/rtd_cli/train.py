"""`rtd train`: RTD fine-tuning of the CLIP text tower on text triplets (`jaeseokbyun/RTD:
train_text_encoder.py`; the step itself, with the official line references, is in
`rtd_cli.rtd_step`).

The recipe reads top to bottom, in the shape it shares with `rtd train-phi`
(`rtd_cli.loop`, on the kit `labshared.training`): `train` sets up the data, the towers,
the optimizer and the run's generator in a `TrainState`, restores the latest checkpoint on
`--resume` (or loads `--init-from`), loops over `train_step` with the shared tail
(`loop.end_step`: save when due or on Ctrl-C / SIGTERM, stop on `--stop-after`), logging
each logged step to metrics.jsonl, and `finish`es with the tower and metrics.json. `run`
adds the periodic validation of `--val-dataset`.

Beyond the official code: Pic2Word's IM2TEXT can be the projection (token `*`); negatives can
be all-gathered across ranks (`--gather-negatives`); checkpoints are resumable and the run
always ends with a saved tower (Deviation: the official loop `sys.exit`s, saving only when
the last step is a checkpointing step); the default reports the fixed-step model, with the
best-on-validation one kept only on request (`--keep-best`; the official code keeps the best
CIRR-val R@1, which biases CIRR-val numbers).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labshared import distributed
from labshared.console import log
from labshared.data.text_triplets import TripletSet, load_text_triplets
from labshared.device import Runtime
from labshared.errors import ConfigError
from labshared.launch import Run
from labshared.runs import to_jsonable, write_metrics
from labshared.training import BatchSampler, Interrupt, MetricLogger, StepProgress, TrainState
from rtd_cli import model as M
from rtd_cli.config import EvalConfig, TrainConfig
from rtd_cli.datacheck import load_benchmarks
from rtd_cli.loop import NOISE, Schedule, begin, end_step, fork_generator, mean_loss
from rtd_cli.rtd_step import (
    Parts,
    StepBatch,
    StepSource,
    build_parts,
    cached_anchors,
    grad_scale,
    prompt_style,
    step_loss,
)
from rtd_cli.tokens import triplet_tokens, triplets_digest
from rtd_cli.tower_file import save_text_tower

#: What the run read (source, rows used and skipped), written beside config.json.
DATA_FILE = "data.json"

Validator = Callable[[nn.Module, int], dict[str, float]]


# --------------------------------------------------------------------------- one step
def train_step(
    parts: Parts,
    state: TrainState,
    batch: StepBatch,
    cfg: TrainConfig,
    runtime: Runtime,
) -> torch.Tensor:
    """One optimizer step on one per-process batch; returns this rank's loss."""
    loss = step_loss(parts, batch, cfg, runtime, state.generators[NOISE])
    state.optimizer.zero_grad(set_to_none=True)
    (loss * grad_scale(cfg, runtime)).backward()
    if cfg.max_grad_norm is not None:
        params = [p for p in state.module.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    state.optimizer.step()
    return loss


# --------------------------------------------------------------------------- the recipe
def tower_config(cfg: TrainConfig, parts: Parts, step: int) -> dict[str, Any]:
    """What `rtd eval --text-encoder` needs to rebuild and use the tower."""
    return {
        "backbone": cfg.backbone,
        "pretrained": cfg.pretrained,
        "base": cfg.base,
        "phi": cfg.phi,
        "prompt": parts.template,
        "prompt_style": prompt_style(cfg),
        "symbol": parts.symbol,
        "step": step,
        "train_layers": cfg.train_layers,
        "tool": "rtd train",
    }


def make_optimizer(
    params: list[nn.Parameter], cfg: TrainConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW on the trained parameters, fused (one kernel for every tensor's update) where
    the parameters' device supports it (CUDA, and the CPU in torch >= 2.4); `fused=False`
    forces the per-tensor loop (the bench's reference). The fused update equals the loop's
    to float rounding (tests/rtd/test_hot_path.py)."""
    kwargs = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if fused is False:
        return torch.optim.AdamW(params, **kwargs, foreach=False)
    try:
        return torch.optim.AdamW(params, **kwargs, fused=True)
    except RuntimeError:  # a device without the fused kernel: torch's default
        if fused:
            raise
        return torch.optim.AdamW(params, **kwargs)


def step_source(
    cfg: TrainConfig, parts: Parts, data: TripletSet, runtime: Runtime, use_cache: bool = True
) -> StepSource:
    """The set's token ids (tokenised once, cached) and, with `--cache-anchors`, its frozen
    anchors. Under torchrun rank 0 fills the caches first, the other ranks then read them."""

    def tokens():
        return triplet_tokens(data.triplets, parts.tokenizer, parts.template, parts.symbol,
                              parts.plain, use_cache=use_cache)  # fmt: skip

    ids = tokens() if runtime.is_main else None
    distributed.barrier()
    ids = ids if ids is not None else tokens()
    if not cfg.cache_anchors:
        return StepSource(ids)
    anchors = cached_anchors(parts, ids, runtime, triplets_key=triplets_digest(data.triplets),
                             chunk=2 * cfg.batch_size, use_cache=use_cache)  # fmt: skip
    return StepSource(ids, anchors)


def read_triplets(cfg: TrainConfig) -> TripletSet:
    """The training triplets; what was read and skipped goes to the log."""
    data = load_text_triplets(
        cfg.triplets, columns=cfg.triplet_columns, split=cfg.triplet_split,
        limit=cfg.triplet_limit, toy_seed=cfg.toy_seed,
    )  # fmt: skip
    log(data.skipped_summary())
    return data


def new_state(cfg: TrainConfig, parts: Parts, runtime: Runtime) -> TrainState:
    """The run's resumable state at step 0; `progress` is what checkpoints carry of the
    run's position (step, last loss, the best validation, the logged history)."""
    params = [p for p in parts.tower.parameters() if p.requires_grad]
    return TrainState(
        parts.tower, make_optimizer(params, cfg), {NOISE: fork_generator(cfg.seed, runtime.rank)},
        names=parts.trained_names,  # a partial fine-tune saves only what it changes
        progress={"step": 0, "loss": math.nan, "best": None, "history": []},
    )  # fmt: skip


def train(
    cfg: TrainConfig,
    run_dir: Path,
    runtime: Runtime,
    *,
    triplets: TripletSet | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    validator: Validator | None = None,
    use_cache: bool = True,
    init_from: Path | None = None,
    report_to: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run RTD training into `run_dir`; returns the metrics (also written to metrics.json).

    Args:
        cfg: the resolved config (validated).
        run_dir: the run folder (same path on every rank), started by `start_run`.
        runtime: the run's runtime.
        triplets: the training triplets, as `check` read them before the run folder
            existed (None: read them here).
        resume: continue from the latest checkpoint in `run_dir`.
        stop_after: leave after this many steps of this invocation, with a checkpoint
            (time-sliced jobs; continue with `resume`).
        validator: `(tower, step) -> metrics`, run on rank 0 every `val_every` steps.
        use_cache: read and write the token-id and anchor caches (False: `--no-cache`).
        init_from: a new run starts from these weights (`--init-from`; ignored on resume).
        report_to: trackers besides metrics.jsonl (`--report-to`).

    Raises:
        ConfigError: bad data source, phi or backbone, or a loss that stops being finite.
        Interrupted: SIGINT / SIGTERM; the step's checkpoint is saved.
    """
    data = triplets if triplets is not None else read_triplets(cfg)
    if runtime.is_main:
        write_metrics(run_dir, data.report(), name=DATA_FILE)
    parts, _ = build_parts(cfg, runtime)
    source = step_source(cfg, parts, data, runtime, use_cache)
    state = new_state(cfg, parts, runtime)
    begin(run_dir, state, runtime, resume=resume, init_from=init_from)
    start = state.step
    schedule = Schedule(cfg.steps, cfg.checkpoint_every, cfg.log_every, cfg.keep_last, start,
                        stop_after)  # fmt: skip
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed, runtime.rank, runtime.world_size)
    params = [p for p in parts.tower.parameters() if p.requires_grad]
    log(
        f"rtd train: {len(data)} triplets, {runtime.world_size} process(es) x batch "
        f"{cfg.batch_size}, {len(params)} trained tensors "
        f"({sum(p.numel() for p in params) / 1e6:.2f}M values), steps {start}->{cfg.steps}"
    )

    def checkpoint_meta() -> dict[str, Any]:
        return {"tower": tower_config(cfg, parts, state.step)}

    with (
        MetricLogger(run_dir, report_to, config=to_jsonable(cfg),
                     resume_step=start if resume else None) as metric_log,
        Interrupt() as interrupt,
        StepProgress(cfg.steps, start, label="rtd train") as bar,
    ):  # fmt: skip
        t0 = time.perf_counter()
        while state.step < cfg.steps:
            loss = train_step(parts, state, source.batch(sampler.indices(state.step)), cfg,
                              runtime)  # fmt: skip
            state.progress["step"] += 1
            state.progress["loss"] = mean_loss(loss, state.step)
            seen = (state.step - start) * cfg.batch_size * runtime.world_size
            values = {"loss": state.progress["loss"],
                      "lr": state.optimizer.param_groups[0]["lr"],
                      "triplets_per_second": seen / (time.perf_counter() - t0)}  # fmt: skip
            if schedule.logs(state.step):
                state.progress["history"].append({"step": state.step,
                                                  "loss": round(values["loss"], 6)})  # fmt: skip
            if validator is not None and validation_due(cfg, state.step):
                values["val"] = validate_tower(cfg, run_dir, runtime, parts, validator, state)
            if schedule.logs(state.step) or "val" in values:
                metric_log.log(state.step, values, epoch=sampler.epoch(state.step))
            bar.update(state.step, f"loss {values['loss']:.4f}")
            if end_step(schedule, run_dir, state, runtime, interrupt, checkpoint_meta):
                return {"step": state.step, "stopped": True, "loss": state.progress["loss"]}
        seconds = time.perf_counter() - t0
        rate = (state.step - start) * cfg.batch_size * runtime.world_size / max(seconds, 1e-9)
        metrics = finish(cfg, run_dir, runtime, parts, data, state, rate)
        metric_log.log_final(metrics, state.step)
    return metrics


def validation_due(cfg: TrainConfig, step: int) -> bool:
    return bool(cfg.val_dataset) and (step % cfg.val_every == 0 or step == cfg.steps)


def validate_tower(
    cfg: TrainConfig,
    run_dir: Path,
    runtime: Runtime,
    parts: Parts,
    validator: Validator,
    state: TrainState,
) -> dict[str, float]:
    """Validate on rank 0 and record it in the history; keep the best tower in `best/`
    when `keep_best` names a metric. Returns the scores (empty on the other ranks)."""
    if not runtime.is_main:
        return {}
    tower, step, progress = parts.tower, state.step, state.progress
    tower.eval()
    with torch.no_grad():
        scores = validator(tower, step)
    tower.train()
    progress["history"].append({"step": step, **{f"val/{k}": v for k, v in scores.items()}})
    log(f"step {step}  validation: " + "  ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    if not cfg.keep_best:
        return scores
    if cfg.keep_best not in scores:
        raise ConfigError(f"--keep-best {cfg.keep_best!r}: validation reports {sorted(scores)}")
    value, best = scores[cfg.keep_best], progress["best"]
    if best is None or value > best["value"]:
        progress["best"] = {"metric": cfg.keep_best, "value": value, "step": step}
        save_text_tower(
            run_dir / "best" / "text_tower.safetensors", tower,
            tower_config(cfg, parts, step), params=parts.trained_names,
        )  # fmt: skip
        log(f"new best {cfg.keep_best} {value:.2f} at step {step}")
    return scores


def finish(
    cfg: TrainConfig,
    run_dir: Path,
    runtime: Runtime,
    parts: Parts,
    data: TripletSet,
    state: TrainState,
    rate: float,
) -> dict[str, Any]:
    """Save the final tower (rank 0) and metrics.json (status finished); every rank returns
    the metrics."""
    progress = state.progress
    metrics = {
        "step": state.step, "loss": progress["loss"], "triplets": data.report(),
        "trained_parameters": len(parts.trained_names), "history": progress["history"],
        "triplets_per_second": rate, "best": progress["best"], "status": "finished",
    }  # fmt: skip
    if runtime.is_main:
        path = save_text_tower(
            run_dir / "text_tower.safetensors",
            parts.tower,
            tower_config(cfg, parts, state.step),
            params=parts.trained_names,  # a partial fine-tune stores only what changed
        )
        metrics["text_tower"] = str(path)
        write_metrics(run_dir, metrics)
    distributed.barrier()
    return metrics


# --------------------------------------------------------------------------- entry
def val_config(cfg: TrainConfig) -> EvalConfig:
    """The `rtd eval` config of the periodic validation on `cfg.val_dataset`."""
    return EvalConfig(
        dataset=cfg.val_dataset, data_root=Path(cfg.val_root) if cfg.val_root else None,
        backbone=cfg.backbone, pretrained=cfg.pretrained, quick_gelu=cfg.quick_gelu,
        base=cfg.base, phi=Path(cfg.phi), prompt=prompt_style(cfg), toy_seed=cfg.toy_seed,
    )  # fmt: skip


@dataclasses.dataclass
class Inputs:
    """What `rtd train` reads before its run folder exists, so that a wrong one leaves none."""

    triplets: TripletSet
    val_benches: list  # the parts of the --val-dataset benchmark ([] without one)


def check(cfg: TrainConfig) -> Inputs:
    """`start_run`'s validation of `rtd train`: the CLIP weights are at hand and `--phi`
    loads and fits them, the triplets and the validation benchmark's annotations read (not
    the eval stack: that loads in `run`, with `--val-dataset` only). What was read is kept
    for the run."""
    M.check_clip(cfg.backbone, cfg.pretrained, cfg.phi, cfg.base, cfg.quick_gelu)
    triplets = read_triplets(cfg)
    val_benches = load_benchmarks(val_config(cfg)) if cfg.val_dataset else []
    return Inputs(triplets, val_benches)


def run(
    cfg: TrainConfig,
    started: Run,
    inputs: Inputs,
    *,
    stop_after: int | None = None,
    no_cache: bool = False,
    report_to: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What `rtd train` does in its started run: the validator (rank 0), then training."""
    validator = None
    if cfg.val_dataset and started.runtime.is_main:
        from rtd_cli import evaluate  # the eval stack, only for a run that validates

        validator = evaluate.make_validator(
            val_config(cfg), started.runtime, inputs.val_benches, use_cache=not no_cache
        )
    return train(cfg, started.dir, started.runtime, triplets=inputs.triplets,
                 resume=started.resumed, stop_after=stop_after, validator=validator,
                 use_cache=not no_cache, init_from=started.init_from,
                 report_to=report_to)  # fmt: skip
