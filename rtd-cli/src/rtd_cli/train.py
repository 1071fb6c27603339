"""`rtd train`: RTD fine-tuning of the CLIP text tower on text triplets.

Follows `jaeseokbyun/RTD:train_text_encoder.py` L232-272 and `loader.py::CaptionDataset_RTD`
(method brief section 1.3), for a per-process batch of B triplets (T_r, T_c, T_t):

1. anchors k = frozen([T_t]_B ++ [T_r]_B): target and reference captions, lower-cased with
   the pseudo-token symbol removed (official `clean_caption`);
2. phi input e = frozen(T_r) + sigma * u * n, u ~ U(0,1) per sample, n ~ N(0, I) (the
   second half of k, not recomputed); s = phi(e) with phi frozen in eval mode;
3. queries q = trainable(["a photo of $ that {T_c}"]_B ++ ["a photo of $"]_B) with every `$`
   replaced by s (refined concatenation + refined batch sampling: 2B pairs);
4. loss = target-anchored contrastive loss (rtd_cli.loss) over the 2B pairs, AdamW step.

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
from rtd_cli.config import TrainConfig
from rtd_cli.loss import target_anchored_contrastive_loss

# Fields that may change when a run is resumed (they do not change what is trained).
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_last", "val_every", "log_every"}


# --------------------------------------------------------------------------- data order
class BatchSampler:
    """Stateless triplet order: an endless stream of per-epoch permutations, seeded by
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


# --------------------------------------------------------------------------- model parts
def select_trainable(tower: nn.Module, train_layers: str | None) -> list[str]:
    """Freeze every tower parameter except those under the comma-separated name prefixes
    (all when None). Returns the trained parameter names.

    Raises:
        ConfigError: a prefix that matches no parameter (lists the top-level names).
    """
    names = [n for n, _ in tower.named_parameters()]
    if not train_layers:
        chosen = names
    else:
        prefixes = [p.strip() for p in train_layers.split(",") if p.strip()]
        chosen = []
        for prefix in prefixes:
            hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
            if not hits:
                blocks = sorted(
                    {".".join(n.split(".")[:3]) for n in names if n.startswith("transformer.")}
                )
                top = sorted({n.split(".")[0] for n in names} | set(blocks[-2:]))
                raise ConfigError(
                    f"--train-layers {prefix!r} matches no text-tower parameter; names start "
                    f"with e.g. {', '.join(top)}"
                )
            chosen += [n for n in hits if n not in chosen]
    for name, param in tower.named_parameters():
        param.requires_grad_(name in chosen)
    return chosen


def query_prompts(template: str, symbol: str) -> tuple[str, str]:
    """(composed template with `{mod}`, plain prompt) for a base: "a photo of $ that {mod}"
    gives "a photo of $"; Pic2Word's "a photo of * , {mod}" gives "a photo of *"."""
    if symbol not in template or "{mod}" not in template:
        raise ConfigError(f"prompt {template!r} must contain the symbol {symbol!r} and '{{mod}}'")
    return template, template[: template.index(symbol) + len(symbol)]


def clean_caption(caption: str, symbol: str) -> str:
    """Official `clean_caption` (lower case, symbol removed); truncation is the tokenizer's."""
    return caption.lower().replace(symbol, "").strip()


@dataclasses.dataclass
class Parts:
    """Everything one training step needs, built once."""

    frozen: nn.Module
    trainable: nn.Module  # DDP-wrapped under torchrun
    projection: nn.Module
    tokenizer: Callable
    token_id: int
    symbol: str
    template: str
    plain: str
    trained_names: list[str]


def build_parts(cfg: TrainConfig, runtime: Runtime) -> tuple[Parts, Any]:
    """Load CLIP, make the frozen and trainable towers, load phi. Returns (parts, clip)."""
    from rtd_cli import model as M

    clip_model, _, tokenizer = M.build_clip(
        cfg.backbone, cfg.pretrained, runtime.device, quick_gelu=cfg.quick_gelu
    )
    clip_model.requires_grad_(False)
    embed_dim, token_dim = M.clip_dims(clip_model)
    projection = M.load_projection(cfg.phi, cfg.base, embed_dim, token_dim).to(runtime.device)
    projection.requires_grad_(False).eval()
    template, symbol = M.prompt_for(cfg.base, "cirr", prompt_style(cfg))
    template, plain = query_prompts(template, symbol)
    frozen = M.text_tower_from_clip(clip_model).to(runtime.device).eval().requires_grad_(False)
    tower = M.text_tower_from_clip(clip_model).to(runtime.device).float().train()
    trained = select_trainable(tower, cfg.train_layers)
    parts = Parts(
        frozen=frozen,
        trainable=distributed.wrap_ddp(tower, runtime.device),
        projection=projection,
        tokenizer=tokenizer,
        token_id=M.pseudo_token_id(tokenizer, symbol),
        symbol=symbol,
        template=template,
        plain=plain,
        trained_names=trained,
    )
    return parts, clip_model


def prompt_style(cfg: TrainConfig) -> str:
    """`cfg.prompt`, else the base's default, the same one `rtd eval` uses
    (`projection.default_prompt_style`): Pic2Word trains with its own token and prompt
    ("a photo of * , {mod}"); LinCIR and SEARLE with RTD's "a photo of $ that {mod}"."""
    from rtd_cli.projection import default_prompt_style

    return cfg.prompt if cfg.prompt is not None else default_prompt_style(cfg.base)


# --------------------------------------------------------------------------- one step
def step_loss(
    parts: Parts,
    batch: list[Any],
    cfg: TrainConfig,
    runtime: Runtime,
    noise_gen: torch.Generator,
) -> torch.Tensor:
    """The RTD loss of one per-process batch of `TextTriplet`s (brief section 1.3).

    With `gather_negatives` under torchrun, the loss is that of the global batch (anchors
    and queries all-gathered; this rank's queries keep their graph). DDP averages per-rank
    gradients, so the caller multiplies by the world size before `backward` to get the
    exact gradient of the global loss (`grad_scale`).
    """
    b = len(batch)
    targets = [clean_caption(t.target, parts.symbol) for t in batch]
    refs = [clean_caption(t.reference, parts.symbol) for t in batch]
    # Deviation: the symbol is removed from the modification text too, so that only the
    # template's slot takes the pseudo token (the official code leaves a `$` in T_c alone).
    mods = [t.conditioning.replace(parts.symbol, " ").strip() for t in batch]
    queries = [parts.template.format(mod=m) for m in mods] + [parts.plain] * b
    device = runtime.device
    anchor_ids = parts.tokenizer(targets + refs).to(device)  # (2B, L)
    query_ids = parts.tokenizer(queries).to(device)  # (2B, L)
    with torch.no_grad():
        with runtime.autocast():
            anchors = parts.frozen(anchor_ids).float()  # (2B, D): [T_t]_B ++ [T_r]_B
        ref_emb = anchors[b:]  # (B, D) unnormalised frozen(T_r), the phi input
        scale = torch.rand(b, 1, generator=noise_gen) * cfg.noise_scale
        noise = torch.randn(ref_emb.shape, generator=noise_gen)
        pseudo = parts.projection(ref_emb + (scale * noise).to(device))  # (B, W)
    pseudo = torch.cat([pseudo, pseudo]).float()  # the same s_i for both query halves
    q = parts.trainable(query_ids, pseudo_tokens=pseudo, pseudo_token_id=parts.token_id)
    if cfg.gather_negatives and runtime.world_size > 1:
        k_all = distributed.all_gather(anchors)  # (2B * world, D), rank-major like q_all
        q_all = distributed.all_gather(q, differentiable=True)
        return target_anchored_contrastive_loss(k_all, q_all, cfg.tau)
    return target_anchored_contrastive_loss(anchors, q, cfg.tau)


def grad_scale(cfg: TrainConfig, runtime: Runtime) -> float:
    """Factor for `backward` that undoes DDP's gradient averaging for the global loss."""
    return float(runtime.world_size) if cfg.gather_negatives and runtime.world_size > 1 else 1.0


# --------------------------------------------------------------------------- the run
def check_resume(cfg: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume with a config that changes what is trained (steps may grow)."""
    saved = read_config(run_dir)["config"]
    now = dataclasses.asdict(cfg)
    diff = {
        k: (saved.get(k), v)
        for k, v in now.items()
        if k not in RESUMABLE_CHANGES and saved.get(k) != v
    }
    if diff:
        shown = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"--resume {run_dir}: flags differ from the saved run ({shown}); pass the same flags"
        )


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


def train(
    cfg: TrainConfig,
    run_dir: Path,
    runtime: Runtime,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    validator: Callable[[nn.Module, int], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Run RTD training into `run_dir`; returns the metrics (also written to metrics.json).

    Args:
        cfg: the resolved config (validated).
        run_dir: the run folder (same path on every rank).
        runtime: from `labshared.device.setup_runtime`.
        resume: continue from the latest checkpoint in `run_dir`.
        stop_after: leave after this many steps of this invocation, with a checkpoint
            (time-sliced jobs; continue with `resume`).
        validator: `(tower, step) -> metrics`, run on rank 0 every `val_every` steps.

    Raises:
        ConfigError: bad data source, phi, backbone or resume mismatch.
    """
    from labshared.data.text_triplets import load_text_triplets
    from rtd_cli import model as M

    if resume and (run_dir / "config.json").is_file():
        check_resume(cfg, run_dir)
    data = load_text_triplets(
        cfg.triplets, columns=cfg.triplet_columns, split=cfg.triplet_split,
        limit=cfg.triplet_limit, toy_seed=cfg.toy_seed,
    )  # fmt: skip
    log(data.skipped_summary())
    parts, clip_model = build_parts(cfg, runtime)
    tower = distributed.unwrap(parts.trainable)
    params = [p for p in tower.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    noise_gen = torch.Generator().manual_seed(cfg.seed * 7919 + runtime.rank)
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed, runtime.rank, runtime.world_size)
    start, best, history = 0, None, []
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        model_state, train_state, meta = load_checkpoint(ckpt, runtime.device)
        tower.load_state_dict(model_state, strict=False)
        optimizer.load_state_dict(train_state["optimizer"])
        saved_rngs = train_state["noise_rng"]
        if runtime.rank < len(saved_rngs):
            noise_gen.set_state(saved_rngs[runtime.rank].cpu())
        start, best, history = meta["step"], meta.get("best"), meta.get("history", [])
        log(f"resumed from {ckpt} at step {start}")
    if runtime.is_main:
        write_config(run_dir, cfg, runtime=runtime.describe(), data=data.report(),
                     trained_parameters=len(parts.trained_names))  # fmt: skip
    log(
        f"rtd train: {len(data)} triplets, {runtime.world_size} process(es) x batch "
        f"{cfg.batch_size}, {len(params)} trained tensors "
        f"({sum(p.numel() for p in params) / 1e6:.2f}M values), steps {start}->{cfg.steps}"
    )

    def save(step: int) -> None:
        mine = noise_gen.get_state().to(runtime.device).unsqueeze(0)
        states = list(distributed.all_gather(mine).cpu())  # one noise-RNG state per rank
        if runtime.is_main:
            sd = tower.state_dict()
            save_checkpoint(
                run_dir, step, {n: sd[n] for n in parts.trained_names},
                {"optimizer": optimizer.state_dict(), "noise_rng": states},
                {"best": best, "history": history, "tower": tower_config(cfg, parts, step)},
                keep_last=cfg.keep_last,
            )  # fmt: skip
        distributed.barrier()

    scale = grad_scale(cfg, runtime)
    step, t0, seen, last_loss = start, time.perf_counter(), 0, math.nan
    while step < cfg.steps:
        batch = [data.triplets[i] for i in sampler.indices(step).tolist()]
        loss = step_loss(parts, batch, cfg, runtime, noise_gen)
        optimizer.zero_grad(set_to_none=True)
        (loss * scale).backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        step, seen = step + 1, seen + len(batch) * runtime.world_size
        last_loss = float(distributed.all_reduce_mean(loss.detach()))
        if not math.isfinite(last_loss):
            raise ConfigError(f"loss became {last_loss} at step {step}; lower --lr")
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = seen / (time.perf_counter() - t0)
            history.append({"step": step, "loss": round(last_loss, 6)})
            log(f"step {step}/{cfg.steps}  loss {last_loss:.4f}  {rate:.1f} triplets/s")
        if (
            validator is not None
            and cfg.val_dataset
            and (step % cfg.val_every == 0 or step == cfg.steps)
        ):
            best = _validate(cfg, run_dir, runtime, parts, tower, step, validator, history, best)
        stopping = stop_after is not None and step - start >= stop_after
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
            save(step)
        if stopping and step < cfg.steps:
            log(f"stopped after {stop_after} steps at step {step}; continue with --resume")
            return {"step": step, "stopped": True, "loss": last_loss}

    metrics = {"step": step, "loss": last_loss, "triplets": data.report(), "history": history,
               "triplets_per_second": seen / max(time.perf_counter() - t0, 1e-9), "best": best}  # fmt: skip
    if runtime.is_main:
        path = M.save_text_tower(
            run_dir / "text_tower.safetensors",
            tower,
            tower_config(cfg, parts, step),
            params=parts.trained_names,  # a partial fine-tune stores only what changed
        )
        metrics["text_tower"] = str(path)
        write_metrics(run_dir, metrics)
    distributed.barrier()
    return metrics


def _validate(cfg, run_dir, runtime, parts, tower, step, validator, history, best):
    """Validate on rank 0; keep the best tower when `keep_best` names a metric."""
    from rtd_cli import model as M

    if runtime.is_main:
        tower.eval()
        with torch.no_grad():
            scores = validator(tower, step)
        tower.train()
        history.append({"step": step, **{f"val/{k}": v for k, v in scores.items()}})
        log(f"step {step}  validation: " + "  ".join(f"{k} {v:.2f}" for k, v in scores.items()))
        if cfg.keep_best:
            if cfg.keep_best not in scores:
                raise ConfigError(
                    f"--keep-best {cfg.keep_best!r}: validation reports {sorted(scores)}"
                )
            value = scores[cfg.keep_best]
            if best is None or value > best["value"]:
                best = {"metric": cfg.keep_best, "value": value, "step": step}
                M.save_text_tower(run_dir / "best" / "text_tower.safetensors", tower,
                                  tower_config(cfg, parts, step), params=parts.trained_names)  # fmt: skip
                log(f"new best {cfg.keep_best} {value:.2f} at step {step}")
    return best


# --------------------------------------------------------------------------- entry
def shared_run_dir(
    command: str, output_dir: Path | None, resume: bool, overwrite: bool, runtime: Runtime
) -> Path:
    """Create the run folder on rank 0 and hand its path to every rank (timestamps of
    default folders could differ between processes)."""
    from labshared.runs import create_run_dir

    path = (
        [str(create_run_dir("rtd", command, output_dir, resume=resume, overwrite=overwrite))]
        if runtime.is_main
        else [""]
    )
    if runtime.world_size > 1:
        torch.distributed.broadcast_object_list(path, src=0)
    return Path(path[0])


def make_validator(cfg: TrainConfig, runtime: Runtime, no_cache: bool = False):
    """`(tower, step) -> metrics` through the `rtd eval` code on `cfg.val_dataset`."""
    if not cfg.val_dataset:
        return None
    from rtd_cli import evaluate

    return evaluate.make_validator(
        dataset=cfg.val_dataset,
        root=cfg.val_root,
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        base=cfg.base,
        phi=cfg.phi,
        prompt=prompt_style(cfg),
        runtime=runtime,
        use_cache=not no_cache,
        toy_seed=cfg.toy_seed,
        quick_gelu=cfg.quick_gelu,
    )


def run(
    cfg: TrainConfig,
    runtime: Runtime,
    *,
    output_dir: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    no_cache: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """What `rtd train` does after parsing: run folder, validator, training, teardown."""
    try:
        run_dir = shared_run_dir("train", output_dir, resume, overwrite, runtime)
        validator = make_validator(cfg, runtime, no_cache) if runtime.is_main else None
        metrics = train(
            cfg, run_dir, runtime, resume=resume, stop_after=stop_after, validator=validator
        )
    finally:
        distributed.cleanup()
    return run_dir, metrics
