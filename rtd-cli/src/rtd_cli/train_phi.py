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

Deviations: LinCIR loops forever and `exit()`s at `max_train_steps` (only checkpointing steps
are saved); here the last step always saves and runs resume. The data order and the masking
randomness, the input noise and phi's dropout are functions of (seed, step, rank), so a resumed
run continues exactly. LinCIR's masks use a special token `[$]` that BPE never merges; here
`$` is kept apart from glued punctuation by spaces and the slot is checked after tokenization
(`keywords.ensure_slot`; see `rtd_cli.keywords` for why and how).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labshared import distributed
from labshared.console import log
from labshared.device import Runtime
from labshared.errors import ConfigError
from labshared.runs import (
    latest_checkpoint,
    load_checkpoint,
    read_config,
    save_checkpoint,
    write_config,
    write_metrics,
)
from rtd_cli.config import PhiConfig
from rtd_cli.train import RESUMABLE_CHANGES, BatchSampler


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


def set_dropout(module: torch.nn.Module, p: float) -> None:
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = p


def train_phi(
    cfg: PhiConfig,
    run_dir: Path,
    runtime: Runtime,
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train phi into `run_dir`; returns the metrics (also in metrics.json).

    Writes `phi.pt` (official format), `checkpoints/step-*` (resumable), `config.json`,
    `metrics.json`.
    """
    from labshared.data.text_triplets import load_captions
    from rtd_cli import model as M
    from rtd_cli.keywords import ensure_slot, fallback_caption, load_masker

    if resume and (run_dir / "config.json").is_file():
        saved = read_config(run_dir)["config"]
        diff = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in RESUMABLE_CHANGES and saved.get(k) != v}  # fmt: skip
        if diff:
            raise ConfigError(
                f"--resume {run_dir}: flags differ from the saved run: {sorted(diff)}"
            )
    data = load_captions(
        cfg.captions, column=cfg.caption_column, limit=cfg.caption_limit, toy_seed=cfg.toy_seed
    )
    log(data.skipped_summary())
    clip_model, _, tokenizer = M.build_clip(
        cfg.backbone, cfg.pretrained, runtime.device, quick_gelu=cfg.quick_gelu
    )
    clip_model.requires_grad_(False)
    embed_dim, token_dim = M.clip_dims(clip_model)
    frozen = M.text_tower_from_clip(clip_model).to(runtime.device).eval().requires_grad_(False)
    symbol = M.get_base(cfg.base).symbol
    token_id = M.pseudo_token_id(tokenizer, symbol)
    masker = load_masker(cfg.keywords, symbol)
    phi = M.build_projection(cfg.base, embed_dim, token_dim).to(runtime.device)
    if cfg.dropout is not None:
        set_dropout(phi, cfg.dropout)
    optimizer = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    # Captions whose slot was lost (BPE merge or truncation) and that trained on "a photo of $":
    # this rank's count since start, plus the global count saved with the checkpoint.
    fallbacks, fallbacks_before = 0, 0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        model_state, train_state, meta = load_checkpoint(ckpt, runtime.device)
        phi.load_state_dict(model_state)
        optimizer.load_state_dict(train_state["optimizer"])
        start, history = meta["step"], meta.get("history", [])
        fallbacks_before = meta.get("slot_fallbacks", 0)
        log(f"resumed from {ckpt} at step {start}")
    ddp_phi = distributed.wrap_ddp(phi, runtime.device)
    ddp_phi.train()
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed, runtime.rank, runtime.world_size)
    if runtime.is_main:
        write_config(run_dir, cfg, runtime=runtime.describe(), keywords=masker.backend,
                     captions={"source": data.source, "used": len(data), "skipped": len(data.skipped)})  # fmt: skip
    log(f"rtd train-phi: {len(data)} captions, keywords {masker.backend}, symbol {symbol!r}, "
        f"steps {start}->{cfg.steps}")  # fmt: skip

    def total_fallbacks() -> int:  # collective: every rank calls it
        here = torch.tensor(float(fallbacks), device=runtime.device)
        return fallbacks_before + round(
            float(distributed.all_reduce_mean(here)) * runtime.world_size
        )

    def save(step: int) -> None:
        n_fallbacks = total_fallbacks()
        if runtime.is_main:
            save_checkpoint(run_dir, step, phi.state_dict(), {"optimizer": optimizer.state_dict()},
                            {"history": history, "base": cfg.base, "slot_fallbacks": n_fallbacks},
                            keep_last=cfg.keep_last)  # fmt: skip
        distributed.barrier()

    step, t0, last, kw_share = start, time.perf_counter(), math.nan, 0.0
    while step < cfg.steps:
        batch = [data.captions[i] for i in sampler.indices(step).tolist()]
        clean, masked, kw_share = masked_batch(batch, masker, cfg.seed, step, runtime.rank)
        step_seed = cfg.seed * 1_000_003 + step * 64 + runtime.rank
        gen = torch.Generator().manual_seed(step_seed)
        torch.manual_seed(step_seed)  # phi's dropout: a resumed run draws the same masks
        ids = tokenizer(clean).to(runtime.device)
        masked_ids, _, fell_back = ensure_slot(tokenizer, masked, token_id, symbol)
        masked_ids = masked_ids.to(runtime.device)
        fallbacks += int(fell_back.sum())
        with torch.no_grad(), runtime.autocast():
            target = frozen(ids).float()  # (B, D) unnormalised text_embeds
        noise = (
            torch.rand(len(batch), 1, generator=gen)
            * cfg.noise_scale
            * torch.randn(target.shape, generator=gen)
        )
        with runtime.autocast():
            pseudo = ddp_phi(target + noise.to(runtime.device))  # (B, W)
            pred = frozen(masked_ids, pseudo_tokens=pseudo, pseudo_token_id=token_id)
        loss = F.mse_loss(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        last = float(distributed.all_reduce_mean(loss.detach()))
        if not math.isfinite(last):
            raise ConfigError(f"loss became {last} at step {step}; lower --lr")
        if step % cfg.log_every == 0 or step == cfg.steps:
            n_fallbacks = total_fallbacks()
            history.append({"step": step, "loss": last, "keyword_share": kw_share,
                            "slot_fallbacks": n_fallbacks})  # fmt: skip
            rate = (step - start) * len(batch) * runtime.world_size / (time.perf_counter() - t0)
            log(
                f"step {step}/{cfg.steps}  mse {last:.5f}  keywords {kw_share:.0%}  "
                f"fallbacks {n_fallbacks}  {rate:.0f} captions/s"
            )
        stopping = stop_after is not None and step - start >= stop_after
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
            save(step)
        if stopping and step < cfg.steps:
            log(f"stopped after {stop_after} steps at step {step}; continue with --resume")
            return {"step": step, "stopped": True, "loss": last}

    n_fallbacks = total_fallbacks()
    if n_fallbacks:
        log(f"{n_fallbacks} masked captions lost the {symbol!r} slot (punctuation merged by BPE "
            f"or truncation) and trained on {fallback_caption(symbol)!r}")  # fmt: skip
    metrics = {"step": step, "loss": last, "history": history, "keywords": masker.backend,
               "slot_fallbacks": n_fallbacks,
               "captions": {"source": data.source, "used": len(data), "skipped": len(data.skipped)}}  # fmt: skip
    if runtime.is_main:
        metrics["phi"] = str(M.save_projection(run_dir / "phi.pt", phi.eval(), cfg.base))
        M.write_phi_provenance(run_dir / "phi.pt", cfg.backbone, cfg.pretrained, cfg.base)
        write_metrics(run_dir, metrics)
    distributed.barrier()
    return metrics
