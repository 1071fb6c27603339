"""Projections phi of projection-based zero-shot CIR and the base-method registry.

- `Phi`: `miccunifi/SEARLE:src/phi.py` (= `navervision/lincir:models.py::Phi`), checkpoint
  `{'Phi': state_dict}`, keys `layers.{0,3,6}.*`;
- `Im2Text`: `google-research/composed_image_retrieval:model/model.py::IM2TEXT`, checkpoint
  key `state_dict_img2text` with DDP's `module.` prefix;
- `BASES`: base name -> projection class, checkpoint key, pseudo-word symbol and the base
  repo's own prompts (brief §2); `RTD_PROMPT` is RTD's common prompt for every base.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from labshared.config import unknown_name
from labshared.errors import ConfigError
from labshared.runs import atomic_torch_save, read_torch_file


class Phi(nn.Module):
    """SEARLE/LinCIR textual inversion network phi (`SEARLE:src/phi.py`): unnormalised CLIP
    embedding (B, d) -> pseudo-word token (B, d_tok). State keys `layers.{0,3,6}.*`."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Im2Text(nn.Module):
    """Pic2Word IM2TEXT (`composed_image_retrieval:model/model.py`): n_layer blocks of
    [Linear -> Dropout -> ReLU], then `fc_out`. State keys `layers.{i}.0.*`, `fc_out.*`."""

    def __init__(
        self,
        embed_dim: int,
        middle_dim: int = 512,
        output_dim: int = 512,
        n_layer: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.fc_out = nn.Linear(middle_dim, output_dim)
        dims = [embed_dim] + [middle_dim] * n_layer
        self.layers = nn.Sequential(
            *[
                nn.Sequential(nn.Linear(dims[i], middle_dim), nn.Dropout(dropout), nn.ReLU())
                for i in range(n_layer)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(x))


RTD_PROMPT = "a photo of $ that {mod}"


@dataclass(frozen=True)
class BaseSpec:
    """What a base method fixes: its projection, checkpoint format and query prompts.

    Attributes:
        projection: `Phi` or `Im2Text`.
        checkpoint_key: the key holding the state dict in the official checkpoint.
        symbol: the pseudo-word in the base's own prompts (`$` or `*`).
        prompts: the base repo's own template per benchmark, with `{mod}` for the
            modification text (brief §2).
        fiq_orders: FashionIQ caption joining in the base repo: `both` (c1 and c2, and the
            reverse, features averaged) or `single` (Pic2Word's "{c2} and {c1}").
        default_prompt: the prompt style `rtd train` and `rtd eval` use when `--prompt` is
            not given (`default_prompt_style`): the one the base's projection was trained
            for. Pic2Word's IM2TEXT learned the `*` token in "a photo of * , {mod}"
            (`base`); SEARLE/LinCIR's own prompt is RTD's (`rtd`).
    """

    name: str
    projection: type[nn.Module]
    checkpoint_key: str
    symbol: str
    prompts: Mapping[str, str] = field(default_factory=dict)
    fiq_orders: str = "both"
    default_prompt: str = "rtd"


_SEARLE_PROMPTS = {b: RTD_PROMPT for b in ("cirr", "circo", "fashioniq", "genecis", "toy")}
_PIC2WORD_PROMPT = "a photo of * , {mod}"

BASES: dict[str, BaseSpec] = {
    "pic2word": BaseSpec(
        "pic2word",
        Im2Text,
        "state_dict_img2text",
        "*",
        {b: _PIC2WORD_PROMPT for b in ("cirr", "circo", "fashioniq", "genecis", "toy")},
        fiq_orders="single",
        default_prompt="base",
    ),
    "searle": BaseSpec("searle", Phi, "Phi", "$", _SEARLE_PROMPTS),
    "lincir": BaseSpec("lincir", Phi, "Phi", "$", _SEARLE_PROMPTS),
}
PROMPT_STYLES = ("rtd", "base")


def get_base(base: str) -> BaseSpec:
    if base not in BASES:
        raise unknown_name("--base", base, BASES)
    return BASES[base]


def default_prompt_style(base: str) -> str:
    """The one prompt style `rtd train` and `rtd eval` share for `base` when `--prompt` is
    not given: `base` for Pic2Word ("a photo of * , {mod}", as its official code), `rtd`
    for SEARLE and LinCIR ("a photo of $ that {mod}", their own and RTD's)."""
    return get_base(base).default_prompt


def prompt_for(base: str, benchmark: str, style: str = "rtd") -> tuple[str, str]:
    """(template with `{mod}`, pseudo-token symbol) for a base, benchmark and prompt style.

    `rtd` is the RTD repo's common prompt `a photo of $ that {mod}` for every base; `base`
    is the base repo's own prompt (brief §2).
    """
    spec = get_base(base)
    if style == "rtd":
        return RTD_PROMPT, "$"
    if style == "base":
        return spec.prompts.get(
            benchmark, RTD_PROMPT if spec.symbol == "$" else _PIC2WORD_PROMPT
        ), spec.symbol
    raise unknown_name("--prompt", style, PROMPT_STYLES)


def build_projection(base: str, in_dim: int, token_dim: int) -> nn.Module:
    """A fresh projection for `base` with the official sizes: Phi (4*d hidden, dropout 0.5)
    or IM2TEXT (512 hidden, 2 layers, dropout 0.1)."""
    spec = get_base(base)
    if spec.projection is Phi:
        return Phi(in_dim, 4 * in_dim, token_dim, dropout=0.5)
    return Im2Text(in_dim, 512, token_dim, n_layer=2, dropout=0.1)


def _projection_from_state(base: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Rebuild a projection whose sizes are read off the checkpoint's shapes."""
    spec = get_base(base)
    if spec.projection is Phi:
        need = ("layers.0.weight", "layers.6.weight")
        if not all(k in state for k in need):
            return build_projection(base, 1, 1)  # key check below reports the mismatch
        hidden, in_dim = state["layers.0.weight"].shape
        return Phi(in_dim, hidden, state["layers.6.weight"].shape[0], dropout=0.5)
    n_layer = sum(1 for k in state if k.startswith("layers.") and k.endswith(".0.weight"))
    if "layers.0.0.weight" not in state or "fc_out.weight" not in state:
        return build_projection(base, 1, 1)
    middle, in_dim = state["layers.0.0.weight"].shape
    return Im2Text(in_dim, middle, state["fc_out.weight"].shape[0], n_layer=n_layer, dropout=0.1)


def projection_format(base: str) -> str:
    """What a `--phi` file for `base` must be, for error messages."""
    spec = get_base(base)
    return (
        f"a {base} projection checkpoint: a torch file holding {{'{spec.checkpoint_key}': "
        f"state_dict}} of {spec.projection.__name__} (read with weights_only=True)"
    )


def load_projection(
    path: str | Path, base: str, in_dim: int | None = None, token_dim: int | None = None
) -> nn.Module:
    """Load an official (or `save_projection`) phi / IM2TEXT checkpoint, in eval mode.

    Args:
        path: `.pt` file; read with `torch.load(weights_only=True)`.
        base: `pic2word`, `searle` or `lincir`.
        in_dim, token_dim: if given, the CLIP embedding and token widths it must match.

    Raises:
        ConfigError: missing file, missing checkpoint key, wrong tensor names or shapes;
            the message names what was expected and what was found.
    """
    spec = get_base(base)
    path = Path(path)
    ckpt = read_torch_file(path, flag="--phi", expected=projection_format(base))
    if not isinstance(ckpt, Mapping) or spec.checkpoint_key not in ckpt:
        found = list(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ConfigError(
            f"--phi {path}: expected a {base} checkpoint with top-level key "
            f"{spec.checkpoint_key!r}; found keys {found}"
        )
    state = {k.removeprefix("module."): v for k, v in ckpt[spec.checkpoint_key].items()}
    module = _projection_from_state(base, state)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = {
        k: (tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and state[k].shape != own[k].shape
    }
    if missing or unexpected or bad:
        raise ConfigError(
            f"--phi {path}: not a {spec.projection.__name__} state dict; expected keys "
            f"{sorted(own)}, missing {missing}, unexpected {unexpected}, shape mismatches "
            f"(found, expected) {bad}"
        )
    module.load_state_dict(state)
    got_in, got_tok = _projection_dims(module)
    if (in_dim is not None and got_in != in_dim) or (
        token_dim is not None and got_tok != token_dim
    ):
        raise ConfigError(
            f"--phi {path} maps {got_in}-d embeddings to {got_tok}-d tokens, but the backbone "
            f"has {in_dim}-d embeddings and {token_dim}-d tokens; pick the phi of this backbone"
        )
    return module.eval()


def _projection_dims(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, Phi):
        return module.layers[0].in_features, module.layers[6].out_features
    return module.layers[0][0].in_features, module.fc_out.out_features


def save_projection(path: str | Path, module: nn.Module, base: str) -> Path:
    """Write `module` in its base's official checkpoint format (Pic2Word with `module.`
    prefixes), atomically, loadable by the official repos and by `load_projection`."""
    spec = get_base(base)
    if not isinstance(module, spec.projection):
        raise ConfigError(
            f"save_projection: base {base} needs {spec.projection.__name__}, "
            f"got {type(module).__name__}"
        )
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    if spec.projection is Im2Text:
        state = {f"module.{k}": v for k, v in state.items()}
    return atomic_torch_save(path, {spec.checkpoint_key: state})
