"""One RTD training step: the towers and the projection it needs (`build_parts`), where its
inputs come from (`StepSource`: the set's token ids, `rtd_cli.tokens`, and optionally its
cached frozen anchors) and its loss on a per-process batch (`step_loss`). `rtd train`
(`rtd_cli.train`) loops over it; `bench/rtd_train_bench.py` times it.

Follows `jaeseokbyun/RTD:train_text_encoder.py` L232-272 and `loader.py::CaptionDataset_RTD`
(method brief section 1.3), for a per-process batch of B triplets (T_r, T_c, T_t):

1. anchors k = frozen([T_t]_B ++ [T_r]_B): target and reference captions, lower-cased with
   the pseudo-token symbol removed (official `clean_caption`);
2. phi input e = frozen(T_r) + sigma * u * n, u ~ U(0,1) per sample, n ~ N(0, I) (the
   second half of k, not recomputed); s = phi(e) with phi frozen in eval mode;
3. queries q = trainable(["a photo of $ that {T_c}"]_B ++ ["a photo of $"]_B) with every `$`
   replaced by s (refined concatenation + refined batch sampling: 2B pairs);
4. loss = target-anchored contrastive loss (rtd_cli.loss) over the 2B pairs, in fp32.

How it runs (the maths above unchanged; each measured in `bench/rtd_train_bench.py`): token
ids come from a per-set cache, not the tokenizer; each batch is cut to its longest
sequence through the pooled EOT (`model.cut_ids`; exact under the causal mask); the frozen
anchors run under no_grad in the autocast dtype, or come from a per-set cache
(`--cache-anchors`); optionally `--compile` and `--grad-checkpointing`.

Deviation: under bf16 the trainable tower runs in bf16 autocast too (fp32 weights,
gradients and optimizer state; the loss in fp32). The official code runs it in fp32 and only
the frozen models in fp16; `--precision fp32` gives an all-fp32 step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from labshared import distributed
from labshared.cache import cached_tensors
from labshared.console import log
from labshared.data.text_triplets import TextTriplet
from labshared.device import Runtime
from labshared.errors import ConfigError
from rtd_cli import model as M
from rtd_cli.config import TrainConfig
from rtd_cli.loss import target_anchored_contrastive_loss
from rtd_cli.projection import default_prompt_style
from rtd_cli.tokens import RaggedIds, TripletTokens, step_texts


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


@dataclasses.dataclass
class Parts:
    """Everything one training step needs, built once.

    Attributes:
        trainable: what the step calls: the tower, DDP-wrapped under torchrun and compiled
            with `--compile`.
        tower: the trainable tower itself (what the optimizer and checkpoints hold).
        clip_identity: what identifies the CLIP weights for cache keys (None for random
            weights, which no cache may hold).
        cut: cut each batch to its longest sequence (`model.cut_ids`); off only in benches.
    """

    frozen: M.TextTower
    trainable: nn.Module
    tower: M.TextTower
    projection: nn.Module
    tokenizer: Callable
    token_id: int
    symbol: str
    template: str
    plain: str
    trained_names: list[str]
    clip_identity: dict[str, Any] | None = None
    cut: bool = True


def build_parts(cfg: TrainConfig, runtime: Runtime) -> tuple[Parts, Any]:
    """Load CLIP, make the frozen and trainable towers, load phi. Returns (parts, clip).

    `--grad-checkpointing` turns on open_clip's per-block activation checkpointing in the
    trainable tower; `--compile` wraps what the step calls in `torch.compile` (the cut
    varies the length from batch to batch: torch compiles the first length, then once more
    for a dynamic one; `dynamic=True` from the start ran ~5x slower than eager on the CPU,
    ViT-B-32 text tower).

    Raises:
        ConfigError: as `model.build_clip_bundle`, or grad checkpointing on a transformer
            that has none.
    """
    clip_model, _, tokenizer, info = M.build_clip_bundle(
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
    if cfg.grad_checkpointing:
        if not hasattr(tower.transformer, "grad_checkpointing"):
            raise ConfigError(f"--grad-checkpointing: {cfg.backbone}'s text transformer has none")
        tower.transformer.grad_checkpointing = True
    trainable = distributed.wrap_ddp(tower, runtime.device)
    if cfg.compile:
        trainable = torch.compile(trainable)
    parts = Parts(
        frozen=frozen,
        trainable=trainable,
        tower=tower,
        projection=projection,
        tokenizer=tokenizer,
        token_id=M.pseudo_token_id(tokenizer, symbol),
        symbol=symbol,
        template=template,
        plain=plain,
        trained_names=trained,
        clip_identity=None if info.kind == "random" else info.cache_identity(),
    )
    return parts, clip_model


def prompt_style(cfg: TrainConfig) -> str:
    """`cfg.prompt`, else the base's default, the same one `rtd eval` uses
    (`projection.default_prompt_style`): Pic2Word trains with its own token and prompt
    ("a photo of * , {mod}"); LinCIR and SEARLE with RTD's "a photo of $ that {mod}"."""
    return cfg.prompt if cfg.prompt is not None else default_prompt_style(cfg.base)


# --------------------------------------------------------------------------- step input
@dataclasses.dataclass
class StepBatch:
    """One per-process batch of B triplets as the step consumes it (CPU tensors).

    Attributes:
        query_ids: (2B, L) `[composed query]_B ++ [plain prompt]_B`, the tokenizer's layout.
        anchor_ids: (2B, L) `[T_t]_B ++ [T_r]_B`, or None when `anchors` are given.
        anchors: (2B, D) frozen features of those texts (`--cache-anchors`), or None.
    """

    query_ids: torch.Tensor
    anchor_ids: torch.Tensor | None = None
    anchors: torch.Tensor | None = None


def tokenize_batch(parts: Parts, triplets: Sequence[TextTriplet]) -> StepBatch:
    """Tokenise a batch on the fly (what the step did before the token cache; tests and the
    bench's "no token cache" variant)."""
    texts = step_texts(triplets, parts.template, parts.symbol)
    return StepBatch(
        query_ids=parts.tokenizer(texts["queries"] + [parts.plain] * len(triplets)),
        anchor_ids=parts.tokenizer(texts["targets"] + texts["refs"]),
    )


@dataclasses.dataclass
class StepSource:
    """Where the steps' inputs come from: the set's token ids, and its frozen anchors
    when they are cached (`cached_anchors`)."""

    tokens: TripletTokens
    anchors: torch.Tensor | None = None  # (N, 2, D): frozen (T_t, T_r) of every triplet

    def batch(self, rows: torch.Tensor) -> StepBatch:
        """The StepBatch of triplet indices `rows` (B,)."""
        query_ids = self.tokens.query_ids(rows)
        if self.anchors is None:
            return StepBatch(query_ids, anchor_ids=self.tokens.anchor_ids(rows))
        picked = self.anchors[rows]  # (B, 2, D)
        return StepBatch(query_ids, anchors=torch.cat([picked[:, 0], picked[:, 1]]))


def _to_device(parts: Parts, ids: torch.Tensor, tower: M.TextTower, device) -> torch.Tensor:
    ids = M.cut_ids(ids, tower) if parts.cut else ids
    return ids.to(device, non_blocking=True)


def frozen_features(parts: Parts, ids: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """(N, D) frozen-tower features of (N, L) ids, under no_grad in the autocast dtype, in
    the dtype the tower returns there (bf16 under bf16 autocast)."""
    with torch.no_grad(), runtime.autocast():
        return parts.frozen(_to_device(parts, ids, parts.frozen, runtime.device))


def trainable_autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    """Autocast for the trainable tower: bf16 only. Its weights, gradients and AdamW state
    stay fp32; bf16 needs no loss scaling. Under fp16 it runs in fp32 as the official code
    does (fp16 training would need a gradient scaler)."""
    return runtime.autocast() if runtime.precision.name == "bf16" else contextlib.nullcontext()


# --------------------------------------------------------------------------- one step
def step_loss(
    parts: Parts,
    batch: StepBatch,
    cfg: TrainConfig,
    runtime: Runtime,
    noise_gen: torch.Generator,
) -> torch.Tensor:
    """The RTD loss of one per-process batch (brief section 1.3), in fp32.

    With `gather_negatives` under torchrun, the loss is that of the global batch (anchors
    and queries all-gathered; this rank's queries keep their graph). DDP averages per-rank
    gradients, so the caller multiplies by the world size before `backward` to get the
    exact gradient of the global loss (`grad_scale`).
    """
    device = runtime.device
    b = batch.query_ids.shape[0] // 2
    if batch.anchors is not None:
        anchors = batch.anchors.to(device).float()  # (2B, D) cached, as computed below
    else:
        anchors = frozen_features(parts, batch.anchor_ids, runtime).float()  # (2B, D)
    with torch.no_grad():
        ref_emb = anchors[b:]  # (B, D) unnormalised frozen(T_r), the phi input
        scale = torch.rand(b, 1, generator=noise_gen) * cfg.noise_scale
        noise = torch.randn(ref_emb.shape, generator=noise_gen)
        pseudo = parts.projection(ref_emb + (scale * noise).to(device))  # (B, W)
    pseudo = torch.cat([pseudo, pseudo]).float()  # the same s_i for both query halves
    query_ids = _to_device(parts, batch.query_ids, parts.tower, device)
    with trainable_autocast(runtime):
        q = parts.trainable(query_ids, pseudo_tokens=pseudo, pseudo_token_id=parts.token_id)
    q = q.float()  # the loss in fp32: logits reach 1/tau and a bf16 softmax loses the ranking
    if cfg.gather_negatives and runtime.world_size > 1:
        k_all = distributed.all_gather(anchors)  # (2B * world, D), rank-major like q_all
        q_all = distributed.all_gather(q, differentiable=True)
        return target_anchored_contrastive_loss(k_all, q_all, cfg.tau)
    return target_anchored_contrastive_loss(anchors, q, cfg.tau)


# --------------------------------------------------------------------------- anchor cache
def cached_anchors(
    parts: Parts,
    tokens: TripletTokens,
    runtime: Runtime,
    *,
    triplets_key: str,
    chunk: int,
    use_cache: bool = True,
) -> torch.Tensor:
    """(N, 2, D) frozen features of every triplet's (T_t, T_r), on the CPU, in the dtype
    the step's own frozen forward returns (`--cache-anchors`).

    Computed once per (CLIP weights, triplet set, precision) and cached; random weights are
    never cached (the same name holds different weights). Rows are encoded sorted by
    length, so each chunk is cut short. Under torchrun rank 0 computes and writes, the other
    ranks then read.

    Args:
        triplets_key: the set's content digest (`tokens.triplets_digest`).
        chunk: sequences per frozen forward.
    """
    spec = {
        "kind": "rtd-anchors",
        "clip": parts.clip_identity,
        "triplets": triplets_key,
        "tokens": len(tokens),
        "precision": runtime.precision.name,
        "tf32": runtime.tf32,
        "version": 1,
    }
    enabled = use_cache and parts.clip_identity is not None

    def compute() -> dict[str, torch.Tensor]:
        log(f"encoding the frozen anchors of {len(tokens)} triplets (--cache-anchors)")
        roles = [
            encode_sorted(parts, ragged, runtime, chunk) for ragged in (tokens.targets, tokens.refs)
        ]
        return {"anchors": torch.stack(roles, dim=1)}  # (N, 2, D)

    if runtime.is_main or not enabled:
        anchors = cached_tensors("rtd-anchors", spec, compute, enabled=enabled)["anchors"]
    distributed.barrier()
    if not runtime.is_main and enabled:
        anchors = cached_tensors("rtd-anchors", spec, compute, enabled=True)["anchors"]
    return anchors


def encode_sorted(parts: Parts, ragged: RaggedIds, runtime: Runtime, chunk: int) -> torch.Tensor:
    """(N, D) frozen features of every ragged row, encoded `chunk` rows at a time in order
    of length (short rows together: less padding), returned in row order on the CPU."""
    order = torch.argsort(ragged.lengths, stable=True)
    out: torch.Tensor | None = None
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        feats = frozen_features(parts, ragged.dense(rows, parts_context(parts)), runtime).cpu()
        if out is None:
            out = torch.empty(len(order), feats.shape[1], dtype=feats.dtype)
        out[rows] = feats
    assert out is not None, "an empty triplet set is refused when it is read"
    return out


def parts_context(parts: Parts) -> int:
    """The towers' context length (the positional embedding's rows)."""
    return int(parts.tower.positional_embedding.shape[0])


def grad_scale(cfg: TrainConfig, runtime: Runtime) -> float:
    """Factor for `backward` that undoes DDP's gradient averaging for the global loss."""
    return float(runtime.world_size) if cfg.gather_negatives and runtime.world_size > 1 else 1.0
