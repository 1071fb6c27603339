"""`rtd train-phi`: LinCIR-style text-only training of the projection phi.

LinCIR (`navervision/lincir:train_phi.py`, `loader.py::CaptionDataset`) trains phi on
captions alone, with the CLIP text encoder frozen:

1. clean the caption (lower case, `$` removed) and mask its keywords with the pseudo token
   (`rtd_cli.keywords`): "a red car on the street" -> "$ on $"; a masked caption whose
   token ids lack the pseudo token after truncation becomes "a photo of $" (LinCIR's
   fallback), counted in the log and in metrics.json (`slot_fallbacks`);
2. e = text_embeds(caption) (unnormalised projected feature of the frozen tower);
3. s = phi(e + sigma * u * n), u ~ U(0,1) per sample, n ~ N(0, I), sigma = 1.0;
4. loss = MSE(text_embeds(masked caption with every `$` := s), e); AdamW on phi only.

LinCIR's paper checkpoints were never released (navervision/lincir#8, #16), so the base of a
LinCIR+RTD reproduction has to be trained; this command writes `phi.pt` in the official
`{'Phi': state_dict}` format (Pic2Word's `{'state_dict_img2text': ...}` with `--base
pic2word`), which `rtd eval --phi` and `rtd train --phi` load.

The recipe has the shape of `rtd train` (`rtd_cli.loop`, on the kit `labshared.training`):
set up a `TrainState`, restore on `--resume` (or load `--init-from`), loop over
`train_step` with the shared tail (save when due or at the step a Ctrl-C / SIGTERM came,
stop on `--stop-after`), log each logged step to metrics.jsonl, `finish` with phi.pt and
metrics.json.

Deviations: LinCIR loops forever and `exit()`s at `max_train_steps` (only checkpointing steps
are saved); here the last step always saves and runs resume. The data order and the keyword
choice of a caption without keywords are functions of (seed, step, rank); the input noise
and phi's dropout masks come from the run's generator (`loop.fork_generator`, saved with
each checkpoint), so a resumed run continues exactly. LinCIR's masks use a special token
`[$]` that BPE never merges; here `$` is kept apart from glued punctuation by spaces and the
slot is checked after tokenization (`keywords.ensure_slot`; see `rtd_cli.keywords` for why
and how).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labshared import distributed
from labshared.console import log
from labshared.data.text_triplets import CaptionSet, load_captions
from labshared.device import Runtime
from labshared.launch import Run
from labshared.runs import to_jsonable, write_metrics
from labshared.training import BatchSampler, Interrupt, MetricLogger, StepProgress, TrainState
from rtd_cli import model as M
from rtd_cli.config import PhiConfig
from rtd_cli.keywords import KeywordMasker, ensure_slot, fallback_caption, load_masker
from rtd_cli.loop import NOISE, Schedule, begin, end_step, fork_generator, mean_loss

#: What the run read (source, captions used and skipped), written beside config.json.
DATA_FILE = "data.json"


# --------------------------------------------------------------------------- pieces
def masked_batch(
    captions: list[str], masker, seed: int, step: int, rank: int
) -> tuple[list[str], list[str], float]:
    """(clean captions, masked captions, share with real keywords) for one batch; the random
    word choice of keyword-less captions is seeded by (seed, step, rank)."""
    rng = random.Random(f"{seed}-{step}-{rank}")
    clean, masked, found = [], [], 0
    for caption in captions:
        c, m, kw = masker.mask(caption, rng)
        clean.append(c)
        masked.append(m)
        found += kw
    return clean, masked, found / max(len(captions), 1)


class ForkedDropout(nn.Module):
    """`nn.Dropout` whose masks come from the run's generator, not from the global RNG: a
    resumed run restores the generator and so draws the same masks. The masks are drawn on
    the CPU (the generator's device) and moved to the input's."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1 - self.p)


def fork_dropout(module: nn.Module, generator: torch.Generator, p: float | None = None) -> None:
    """Swap every `nn.Dropout` of `module` for a `ForkedDropout` on `generator`, with rate
    `p` (None: each keeps its own). Dropout holds no weights, so the state dict and the
    checkpoint format do not change."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, ForkedDropout(child.p if p is None else p, generator))


# --------------------------------------------------------------------------- setup
@dataclass
class Parts:
    """What one step needs: the frozen text tower, phi (DDP-wrapped under torchrun) and
    the pseudo-token bookkeeping."""

    frozen: nn.Module
    phi: nn.Module
    tokenizer: Callable
    token_id: int
    symbol: str
    masker: KeywordMasker


def build_parts(
    cfg: PhiConfig, runtime: Runtime, masker: KeywordMasker, generator: torch.Generator
) -> tuple[Parts, nn.Module]:
    """Load CLIP and its frozen text tower, make a fresh phi whose dropout draws from
    `generator`. Returns (parts, the unwrapped phi)."""
    clip_model, _, tokenizer = M.build_clip(
        cfg.backbone, cfg.pretrained, runtime.device, quick_gelu=cfg.quick_gelu
    )
    clip_model.requires_grad_(False)
    embed_dim, token_dim = M.clip_dims(clip_model)
    frozen = M.text_tower_from_clip(clip_model).to(runtime.device).eval().requires_grad_(False)
    symbol = M.get_base(cfg.base).symbol
    phi = M.build_projection(cfg.base, embed_dim, token_dim).to(runtime.device)
    fork_dropout(phi, generator, cfg.dropout)
    wrapped = distributed.wrap_ddp(phi, runtime.device)
    wrapped.train()
    token_id = M.pseudo_token_id(tokenizer, symbol)
    return Parts(frozen, wrapped, tokenizer, token_id, symbol, masker), phi


# --------------------------------------------------------------------------- one step
def train_step(
    parts: Parts,
    state: TrainState,
    batch: list[str],
    cfg: PhiConfig,
    runtime: Runtime,
    step: int,
) -> tuple[torch.Tensor, float, int]:
    """One optimizer step on one per-process batch of captions.

    Returns:
        (this rank's loss, share of captions with real keywords, captions that lost their
        slot and trained on the fallback prompt).
    """
    clean, masked, kw_share = masked_batch(batch, parts.masker, cfg.seed, step, runtime.rank)
    ids = parts.tokenizer(clean).to(runtime.device)
    masked_ids, _, fell_back = ensure_slot(parts.tokenizer, masked, parts.token_id, parts.symbol)
    masked_ids = masked_ids.to(runtime.device)
    with torch.no_grad(), runtime.autocast():
        target = parts.frozen(ids).float()  # (B, D) unnormalised text_embeds
    gen = state.generators[NOISE]
    noise = (
        torch.rand(len(batch), 1, generator=gen)
        * cfg.noise_scale
        * torch.randn(target.shape, generator=gen)
    )
    with runtime.autocast():
        pseudo = parts.phi(target + noise.to(runtime.device))  # (B, W); dropout draws from gen
        pred = parts.frozen(masked_ids, pseudo_tokens=pseudo, pseudo_token_id=parts.token_id)
    loss = F.mse_loss(pred.float(), target)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    return loss, kw_share, int(fell_back.sum())


# --------------------------------------------------------------------------- the recipe
def new_state(cfg: PhiConfig, phi: nn.Module, generator: torch.Generator) -> TrainState:
    """The run's resumable state at step 0; `progress` is what checkpoints carry of the
    run's position (step, last loss and keyword share, the run's slot fallbacks on all
    ranks, the logged history)."""
    optimizer = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    progress = {"step": 0, "loss": math.nan, "keyword_share": 0.0, "slot_fallbacks": 0,
                "history": []}  # fmt: skip
    return TrainState(phi, optimizer, {NOISE: generator}, progress=progress)


def count_fallbacks(fell_back: int, runtime: Runtime) -> int:
    """This step's fallback captions on all ranks (collective: every rank calls)."""
    here = torch.tensor(float(fell_back), device=runtime.device)
    return round(float(distributed.all_reduce_mean(here)) * runtime.world_size)


def read_captions(cfg: PhiConfig) -> CaptionSet:
    """The training captions; what was read and skipped goes to the log."""
    data = load_captions(
        cfg.captions, column=cfg.caption_column, limit=cfg.caption_limit, toy_seed=cfg.toy_seed
    )
    log(data.skipped_summary())
    return data


def caption_report(data: CaptionSet) -> dict[str, Any]:
    return {"source": data.source, "used": len(data), "skipped": len(data.skipped)}


def train_phi(
    cfg: PhiConfig,
    run_dir: Path,
    runtime: Runtime,
    *,
    inputs: Inputs | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    init_from: Path | None = None,
    report_to: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train phi into `run_dir`; returns the metrics (also in metrics.json).

    Writes `phi.pt` (official format) with `phi.json` (which CLIP it was trained on),
    `checkpoints/step-*` (resumable), `data.json`, `metrics.jsonl` (the logged steps) and
    `metrics.json`; `inputs` are the captions and keyword masker `check` made before
    the run folder existed (None: make them here). `init_from` starts a new run from those
    weights (`--init-from`), `report_to` names the trackers besides metrics.jsonl.

    Raises:
        Interrupted: SIGINT / SIGTERM; the step's checkpoint is saved.
    """
    inputs = inputs if inputs is not None else check(cfg)
    data = inputs.captions
    if runtime.is_main:
        write_metrics(run_dir, caption_report(data), name=DATA_FILE)
    generator = fork_generator(cfg.seed, runtime.rank)
    parts, phi = build_parts(cfg, runtime, inputs.masker, generator)
    state = new_state(cfg, phi, generator)
    begin(run_dir, state, runtime, resume=resume, init_from=init_from)
    start, progress = state.step, state.progress
    schedule = Schedule(cfg.steps, cfg.checkpoint_every, cfg.log_every, cfg.keep_last, start,
                        stop_after)  # fmt: skip
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed, runtime.rank, runtime.world_size)
    log(f"rtd train-phi: {len(data)} captions, keywords {parts.masker.backend}, symbol "
        f"{parts.symbol!r}, steps {start}->{cfg.steps}")  # fmt: skip
    with (
        MetricLogger(run_dir, report_to, config=to_jsonable(cfg),
                     resume_step=start if resume else None) as metric_log,
        Interrupt() as interrupt,
        StepProgress(cfg.steps, start, label="rtd train-phi") as bar,
    ):  # fmt: skip
        t0 = time.perf_counter()
        while state.step < cfg.steps:
            batch = [data.captions[i] for i in sampler.indices(state.step).tolist()]
            loss, progress["keyword_share"], fell_back = train_step(
                parts, state, batch, cfg, runtime, state.step
            )
            progress["step"] += 1
            progress["slot_fallbacks"] += count_fallbacks(fell_back, runtime)
            progress["loss"] = mean_loss(loss, state.step)
            if schedule.logs(state.step):
                seen = (state.step - start) * cfg.batch_size * runtime.world_size
                log_step(state, metric_log, seen / (time.perf_counter() - t0),
                         sampler.epoch(state.step))  # fmt: skip
            bar.update(state.step, f"mse {progress['loss']:.5f}")
            if end_step(schedule, run_dir, state, runtime, interrupt, lambda: {"base": cfg.base}):
                return {"step": state.step, "stopped": True, "loss": progress["loss"]}
        metrics = finish(cfg, run_dir, runtime, parts, phi, data, state)
        metric_log.log_final(metrics, state.step)
    return metrics


def log_step(state: TrainState, metric_log: MetricLogger, rate: float, epoch: float) -> None:
    """Record the step in the history and in metrics.jsonl."""
    progress = state.progress
    entry = {key: progress[key] for key in ("step", "loss", "keyword_share", "slot_fallbacks")}
    progress["history"].append(entry)
    metric_log.log(
        state.step,
        {**{k: v for k, v in entry.items() if k != "step"},
         "lr": state.optimizer.param_groups[0]["lr"], "captions_per_second": rate},
        epoch=epoch,
    )  # fmt: skip


def finish(
    cfg: PhiConfig,
    run_dir: Path,
    runtime: Runtime,
    parts: Parts,
    phi: nn.Module,
    data: CaptionSet,
    state: TrainState,
) -> dict[str, Any]:
    """Save phi.pt in the official format (rank 0) and metrics.json (status finished);
    every rank returns the metrics."""
    progress = state.progress
    n_fallbacks = progress["slot_fallbacks"]
    if n_fallbacks:
        log(f"{n_fallbacks} masked captions lost the {parts.symbol!r} slot (punctuation merged "
            f"by BPE or truncation) and trained on {fallback_caption(parts.symbol)!r}")  # fmt: skip
    metrics = {"step": state.step, "loss": progress["loss"], "history": progress["history"],
               "keywords": parts.masker.backend, "slot_fallbacks": n_fallbacks,
               "captions": caption_report(data), "status": "finished"}  # fmt: skip
    if runtime.is_main:
        metrics["phi"] = str(M.save_projection(run_dir / "phi.pt", phi.eval(), cfg.base))
        M.write_phi_provenance(run_dir / "phi.pt", cfg.backbone, cfg.pretrained, cfg.base)
        write_metrics(run_dir, metrics)
    distributed.barrier()
    return metrics


# --------------------------------------------------------------------------- entry
@dataclass
class Inputs:
    """What `rtd train-phi` reads before its run folder exists, so that a wrong one (a
    missing caption file, `--keywords spacy` without spaCy) leaves none."""

    captions: CaptionSet
    masker: KeywordMasker


def check(cfg: PhiConfig) -> Inputs:
    """`start_run`'s validation of `rtd train-phi`: the keyword backend loads, the CLIP
    weights are at hand, the captions read. What was made is kept for the run."""
    masker = load_masker(cfg.keywords, M.get_base(cfg.base).symbol)  # first: it is cheap
    M.check_clip(cfg.backbone, cfg.pretrained, None, cfg.base, cfg.quick_gelu)
    return Inputs(read_captions(cfg), masker)


def run(
    cfg: PhiConfig,
    started: Run,
    inputs: Inputs,
    *,
    stop_after: int | None = None,
    report_to: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What `rtd train-phi` does in its started run."""
    return train_phi(cfg, started.dir, started.runtime, inputs=inputs, resume=started.resumed,
                     stop_after=stop_after, init_from=started.init_from,
                     report_to=report_to)  # fmt: skip
