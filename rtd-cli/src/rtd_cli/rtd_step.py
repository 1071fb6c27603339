"""One RTD training step: the towers and the projection it needs (`build_parts`) and its
loss on a per-process batch of text triplets (`step_loss`). `rtd train` (`rtd_cli.train`)
loops over it; `bench/rtd_train_bench.py` times it.

Follows `jaeseokbyun/RTD:train_text_encoder.py` L232-272 and `loader.py::CaptionDataset_RTD`
(method brief section 1.3), for a per-process batch of B triplets (T_r, T_c, T_t):

1. anchors k = frozen([T_t]_B ++ [T_r]_B): target and reference captions, lower-cased with
   the pseudo-token symbol removed (official `clean_caption`);
2. phi input e = frozen(T_r) + sigma * u * n, u ~ U(0,1) per sample, n ~ N(0, I) (the
   second half of k, not recomputed); s = phi(e) with phi frozen in eval mode;
3. queries q = trainable(["a photo of $ that {T_c}"]_B ++ ["a photo of $"]_B) with every `$`
   replaced by s (refined concatenation + refined batch sampling: 2B pairs);
4. loss = target-anchored contrastive loss (rtd_cli.loss) over the 2B pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from labshared import distributed
from labshared.device import Runtime
from labshared.errors import ConfigError
from rtd_cli import model as M
from rtd_cli.config import TrainConfig
from rtd_cli.loss import target_anchored_contrastive_loss
from rtd_cli.projection import default_prompt_style


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
