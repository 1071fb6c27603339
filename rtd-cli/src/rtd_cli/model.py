"""Models of projection-based zero-shot CIR: open_clip backbones and the pseudo-token text
tower (the projections phi live in `projection.py`, re-exported here).

Official source of the pseudo-token encoding: `jaeseokbyun/RTD:encode_with_pseudo_tokens.py::
encode_with_pseudo_tokens_HF` (every `$` replaced through `torch.where`), re-done on an
open_clip text tower exactly as open_clip `model.py::CLIP.encode_text` encodes text.

Deviation: Pic2Word splices the image token at the first `*` position of sample 0 for the
whole batch (`encode_text_img_retrieval`), which assumes one prompt prefix per batch; here
every row is handled on its own, at every occurrence of its token.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import open_clip
import torch
from torch import nn

from labshared.clip import ClipBundle, create_clip
from labshared.clip_weights import RANDOM, fetch_weights
from labshared.console import log
from labshared.errors import ConfigError
from labshared.runs import atomic_write_json
from labshared.tinyclip.fit import ensure_tiny_clip, tiny_clip_path

# The projections and the base registry live in projection.py; re-exported so callers keep
# one import (`from rtd_cli import model as M; M.load_projection(...)`).
from rtd_cli.projection import (  # noqa: F401
    BASES,
    PROMPT_STYLES,
    RTD_PROMPT,
    BaseSpec,
    Im2Text,
    Phi,
    build_projection,
    get_base,
    load_projection,
    prompt_for,
    save_projection,
)

TINY_BACKBONE = "tiny-clip-toy"

# The default open_clip tag of each architecture (when --pretrained is omitted); any other
# open_clip name takes an explicit --pretrained (tag, local file or `random`), and
# `local-dir:`/`hf-hub:` models bring their own weights.
BACKBONES: dict[str, str | None] = {
    "ViT-B-32": "openai",
    "ViT-L-14": "openai",
    "ViT-H-14": "laion2b_s32b_b79k",
    "ViT-bigG-14": "laion2b_s39b_b160k",
    TINY_BACKBONE: None,  # weights fitted on the toy world by labshared.tinyclip
}
RANDOM_WEIGHTS = RANDOM  # --pretrained random: architecture only (tests, benches)


# --------------------------------------------------------------------------- backbones
def build_clip_bundle(
    backbone: str,
    pretrained: str | None,
    device: torch.device | str = "cpu",
    *,
    quick_gelu: bool | None = None,
) -> ClipBundle:
    """Build an open_clip model, its eval transform, its tokenizer and what identifies it,
    through the shared factory `labshared.clip.create_clip` (the activation comes from the
    weights: QuickGELU for OpenAI tags).

    Args:
        backbone: an open_clip architecture (`ViT-B-32`, `ViT-L-14`, `ViT-H-14`,
            `ViT-bigG-14`, ...), `local-dir:PATH` / `hf-hub:ORG/REPO`, or `tiny-clip-toy`.
        pretrained: an open_clip tag, a local checkpoint file, `random` (no weights), or
            None for the backbone's default from `BACKBONES` (the fitted toy weights for
            `tiny-clip-toy`).
        device: where the model goes; it is returned in eval mode.
        quick_gelu: `--quick-gelu on|off` for a local checkpoint; None: from the weights.

    Returns:
        ClipBundle(model, preprocess, tokenizer, info): preprocess is open_clip's val
        transform (resize + centre crop with the weights' mean/std). Measured against the
        CLIPImageProcessor LinCIR/RTD run (tests/shared/test_clip_reference.py): identical
        pixels, except that when the resize leaves an odd margin torchvision rounds the crop
        offset and HF floors it (Deviation: one column apart; ours is OpenAI CLIP's own).
        `info.cache_identity()` keys caches.

    Raises:
        ConfigError: unknown backbone or tag, weights that cannot be found offline, a file
            that is not a checkpoint of the backbone, no default weights for the backbone.
    """
    if backbone == TINY_BACKBONE and pretrained is None:
        pretrained = str(ensure_tiny_clip())
    else:
        pretrained = default_weights(backbone, pretrained)
    bundle = create_clip(
        backbone,
        pretrained,
        quick_gelu=quick_gelu,
        device=device,
        option_names=("--backbone", "--pretrained"),
    )
    log(f"CLIP {bundle.info.describe()}")
    return bundle


def default_weights(backbone: str, pretrained: str | None) -> str | None:
    """`--pretrained`, else the backbone's default tag (`BACKBONES`); None for `local-dir:`
    / `hf-hub:` models and for `tiny-clip-toy` (its fitted weights are made, not fetched).

    Raises:
        ConfigError: an open_clip architecture without a default here and no --pretrained.
    """
    if pretrained is not None or backbone.startswith(("local-dir:", "hf-hub:")):
        return pretrained
    if backbone == TINY_BACKBONE:
        return None
    pretrained = BACKBONES.get(backbone)
    if pretrained is None and backbone in open_clip.list_models():
        tags = open_clip.list_pretrained_tags_by_model(backbone)
        raise ConfigError(
            f"--backbone {backbone} has no default weights here ({', '.join(BACKBONES)} "
            f"do); pass --pretrained with one of its open_clip tags "
            f"({', '.join(tags) or 'none known'}), a local checkpoint file or "
            f"'{RANDOM_WEIGHTS}'"
        )
    return pretrained


def check_clip(
    backbone: str,
    pretrained: str | None,
    phi: str | Path | None,
    base: str,
    quick_gelu: bool | None = None,
) -> None:
    """Before a run folder is made: the backbone and its weights resolve (an open_clip
    tag's file is in the cache or downloaded now; offline, one error within seconds), and
    `phi` (when given) fits the backbone's widths. The model is built on the `meta`
    device: no memory, no weights read."""
    weights = default_weights(backbone, pretrained)
    # a local file is only hashed and read by the real build; its widths are the
    # architecture's (a file that does not fit it is refused when it loads)
    shape_only = weights is not None and Path(weights).is_file()
    bundle = create_clip(
        backbone, None if shape_only else weights, quick_gelu=quick_gelu, device="meta",
        load_weights=False, option_names=("--backbone", "--pretrained"),
    )  # fmt: skip
    fetch_weights(backbone, weights, option_names=("--backbone", "--pretrained"))
    if phi is not None:
        embed_dim, token_dim = clip_dims(bundle.model)
        load_projection(phi, base, in_dim=embed_dim, token_dim=token_dim)


def build_clip(
    backbone: str,
    pretrained: str | None,
    device: torch.device | str = "cpu",
    *,
    quick_gelu: bool | None = None,
):
    """(clip_model, preprocess, tokenizer) of `build_clip_bundle` (same arguments)."""
    model, preprocess, tokenizer, _ = build_clip_bundle(
        backbone, pretrained, device, quick_gelu=quick_gelu
    )
    return model, preprocess, tokenizer


def pseudo_token_id(tokenizer, symbol: str) -> int:
    """The vocabulary id of `symbol` as a standalone word (`$` -> 259, `*` -> 265 in the
    CLIP BPE), looked up rather than hard-coded (SEARLE hard-codes 259).

    Raises:
        ConfigError: the symbol does not encode to exactly one token.
    """
    if hasattr(tokenizer, "encode"):
        ids = list(tokenizer.encode(symbol))
    else:  # tokenizers without `encode`: strip the special tokens from a full tokenization
        row = tokenizer([symbol])[0].tolist()
        special = {
            0,
            getattr(tokenizer, "sot_token_id", -1),
            getattr(tokenizer, "eot_token_id", -1),
        }
        ids = [i for i in row if i not in special]
    if len(ids) != 1:
        raise ConfigError(f"pseudo-token symbol {symbol!r} tokenizes to {ids}; expected one token")
    return int(ids[0])


# --------------------------------------------------------------------------- text tower
class TextTower(nn.Module):
    """A standalone copy of an open_clip CLIP text side, with pseudo-token injection.

    Parameter names equal those of open_clip's `CLIP` (`token_embedding.weight`,
    `positional_embedding`, `transformer.resblocks.*`, `ln_final.*`, `text_projection`),
    so a state dict moves between the two.
    """

    def __init__(
        self,
        token_embedding: nn.Embedding,
        positional_embedding: nn.Parameter,
        transformer: nn.Module,
        ln_final: nn.Module,
        text_projection: nn.Parameter | nn.Linear | None,
        attn_mask: torch.Tensor | None,
        pool_type: str = "argmax",
        eos_id: int | None = None,
    ) -> None:
        super().__init__()
        self.token_embedding = token_embedding
        self.positional_embedding = positional_embedding
        self.transformer = transformer
        self.ln_final = ln_final
        self.text_projection = text_projection
        self.register_buffer("attn_mask", attn_mask, persistent=False)
        self.pool_type = pool_type
        self.eos_id = eos_id

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    def _cast_dtype(self) -> torch.dtype:
        if hasattr(self.transformer, "get_cast_dtype"):
            return self.transformer.get_cast_dtype()
        return self.token_embedding.weight.dtype

    def forward(
        self,
        ids: torch.Tensor,
        pseudo_tokens: torch.Tensor | None = None,
        pseudo_token_id: int = 259,
    ) -> torch.Tensor:
        """Encode token ids, replacing every `pseudo_token_id` by that row's pseudo token.

        Args:
            ids: (B, L) token ids, L <= context length, SOT/EOT/zero padding as open_clip's
                tokenizer makes them.
            pseudo_tokens: (B, W) or (1, W) vectors in token-embedding space (W = width), or
                None for plain text encoding.
            pseudo_token_id: the vocabulary id to replace (see `pseudo_token_id()`).

        Returns:
            (B, D) unnormalised projected text features (the pooled EOT feature).
        """
        cast = self._cast_dtype()
        x = self.token_embedding(ids).to(cast)  # (B, L, W)
        if pseudo_tokens is not None:
            if pseudo_tokens.dim() != 2 or pseudo_tokens.shape[1] != x.shape[-1]:
                raise ValueError(
                    f"pseudo_tokens has shape {tuple(pseudo_tokens.shape)}; expected "
                    f"({ids.shape[0]}, {x.shape[-1]})"
                )
            slot = (ids == pseudo_token_id).unsqueeze(-1)  # (B, L, 1)
            x = torch.where(slot, pseudo_tokens.to(x.dtype).unsqueeze(1), x)
        length = ids.shape[1]
        x = x + self.positional_embedding[:length].to(cast)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        if hasattr(self.transformer, "batch_first"):
            # open_clip >= 2.2x: the Transformer handles its own (L, B) layout.
            x = self.transformer(x, attn_mask=mask)
        else:  # older open_clip towers want (L, B, W)
            x = self.transformer(x.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)
        x = self.ln_final(x)  # (B, L, W)
        x = _pool(x, ids, self.pool_type, self.eos_id)  # (B, W)
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection  # (B, D)


def _pool(x: torch.Tensor, ids: torch.Tensor, pool_type: str, eos_id: int | None) -> torch.Tensor:
    """open_clip's text pooling: `argmax` takes the EOT position (the largest id)."""
    rows = torch.arange(x.shape[0], device=x.device)
    if pool_type == "argmax":
        return x[rows, ids.argmax(dim=-1)]
    if pool_type == "eos":
        return x[rows, (ids == eos_id).int().argmax(dim=-1)]
    if pool_type == "first":
        return x[:, 0]
    if pool_type == "last":
        return x[:, -1]
    raise ConfigError(f"text pool type {pool_type!r} is not supported (argmax, eos, first, last)")


def cut_ids(ids: torch.Tensor, tower: TextTower) -> torch.Tensor:
    """`ids` cut to the batch's longest sequence through its pooled token, when that cannot
    change the tower's output.

    With a causal attention mask (CLIP's text towers), position i attends to positions
    <= i only, so the pooled EOT feature depends on nothing after it; `TextTower.forward`
    slices the positional embedding and the mask to the ids' length. Features equal the
    full-length encoding (tests/rtd/test_hot_path.py). Towers without a causal mask, or that
    pool the last or first position, get `ids` unchanged.

    Args:
        ids: (B, L) token ids as the tokenizer returns them.
        tower: the tower that will encode them.

    Returns:
        (B, L') ids with L' = 1 + the largest pooled position in the batch (or L).
    """
    if tower.attn_mask is None or tower.pool_type not in ("argmax", "eos") or ids.numel() == 0:
        return ids
    if tower.pool_type == "argmax":
        pooled = ids.argmax(dim=-1)  # the first EOT: open_clip pools there
    else:
        pooled = (ids == tower.eos_id).int().argmax(dim=-1)
    return ids[:, : int(pooled.max()) + 1]


def text_tower_from_clip(clip_model: nn.Module) -> TextTower:
    """Deep-copy the text side of an open_clip `CLIP` (or a `CustomTextCLIP` whose `.text`
    is open_clip's own `TextTransformer`) into a `TextTower`.

    Raises:
        ConfigError: a text tower this encoding cannot reproduce (HF text models, CoCa).
    """
    src = getattr(clip_model, "text", clip_model)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if not all(hasattr(src, name) for name in needed) or getattr(src, "cls_emb", None) is not None:
        raise ConfigError(
            f"{type(clip_model).__name__}: pseudo-token encoding needs an open_clip CLIP text "
            "transformer (token_embedding, positional_embedding, transformer, ln_final)"
        )
    pool_type = getattr(src, "text_pool_type", None) or getattr(src, "pool_type", "argmax")
    eos_id = getattr(src, "text_eos_id", None) or getattr(src, "eos_id", None)
    return TextTower(
        token_embedding=copy.deepcopy(src.token_embedding),
        positional_embedding=copy.deepcopy(src.positional_embedding),
        transformer=copy.deepcopy(src.transformer),
        ln_final=copy.deepcopy(src.ln_final),
        text_projection=copy.deepcopy(getattr(src, "text_projection", None)),
        attn_mask=None if src.attn_mask is None else src.attn_mask.detach().clone(),
        pool_type=pool_type,
        eos_id=eos_id,
    )


def weights_identity(backbone: str, pretrained: str | None) -> str:
    """A string naming the CLIP weights `build_clip(backbone, pretrained)` loads: the tag or
    file given, the backbone's default tag, or, for `tiny-clip-toy`, the cache key of the
    fitted weights (which changes whenever the tiny CLIP is refitted differently)."""
    if pretrained is not None:
        return str(pretrained)
    if backbone == TINY_BACKBONE:
        return tiny_clip_path().stem
    return BACKBONES.get(backbone) or RANDOM_WEIGHTS


def write_phi_provenance(
    phi_path: str | Path, backbone: str, pretrained: str | None, base: str
) -> Path:
    """Record beside a trained projection (`phi.pt` -> `phi.json`) which CLIP it was trained
    on; the checkpoint itself keeps the official format."""
    meta = {"backbone": backbone, "weights": weights_identity(backbone, pretrained), "base": base}
    return atomic_write_json(Path(phi_path).with_suffix(".json"), meta)


def phi_provenance_mismatch(
    phi_path: str | Path, backbone: str, pretrained: str | None
) -> str | None:
    """A sentence saying how the CLIP `phi_path` was trained on differs from the one it is
    used with, or None when they agree or nothing was recorded (official checkpoints)."""
    side = Path(phi_path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
        trained = (meta["backbone"], meta["weights"])
    except (ValueError, KeyError, TypeError):
        return None
    used = (backbone, weights_identity(backbone, pretrained))
    if trained == used:
        return None
    return (
        f"{phi_path} was trained on CLIP {trained[0]} / {trained[1]} (see {side.name}) but is "
        f"used with {used[0]} / {used[1]}; its pseudo tokens may not fit these weights"
    )


def clip_dims(clip_model: nn.Module) -> tuple[int, int]:
    """(embedding dim d of encode_image/encode_text, token-embedding width d_tok)."""
    src = getattr(clip_model, "text", clip_model)
    token_dim = src.token_embedding.weight.shape[1]
    embed_dim = getattr(clip_model.visual, "output_dim", None)
    if embed_dim is None:
        proj = src.text_projection
        embed_dim = proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]
    return int(embed_dim), int(token_dim)
