"""Presets for `rtd train` and `rtd train-phi`: frozen dataclasses, complete and runnable.

Precedence: dataclass defaults < preset < flags actually passed (`None` = keep the preset),
applied by `labshared.config.resolve` with `validate_train` / `validate_phi` and
`RENAMED_PRESETS`.

Presets are named for what they are, `<method>-<backbone>`:

- `rtd train --preset rtd-vit-l14` is what the official RTD run computed
  (`jaeseokbyun/RTD:README.md` / `run.sh`, CLIP ViT-L/14 OpenAI; method brief section 1.4):
  AdamW lr 1e-5, weight decay 0.01, constant LR, 2000 steps, seed 12345, noise 0.5, tau
  0.07, batch 128 in ONE process. `run.sh` launches 4 GPUs x 128, but
  `train_text_encoder.py` (line 262) calls the trainable tower as
  `encode_with_pseudo_tokens_HF(text_encoder_train.module, ...)`, past the DDP wrapper, and
  that is its only call in a step: DDP's reducer never runs, each rank trains its own copy on
  its own 128 triplets, and the saved model is rank 0's (`is_main_process`, lines 285-322).
  `tests/rtd/test_ddp_module_bypass.py` shows the mechanism with two gloo processes.
  `rtd-vit-l14-ddp4` keeps the run `run.sh` seems to describe: 4 processes x 128 with
  gradients averaged by DDP (512 triplets per step). `rtd-vit-b32` and `rtd-vit-bigg14`
  reuse the one-process values on the other backbones of the paper (ViT-B/32 for every
  base, ViT-G/14 for LinCIR): the paper reports those runs but the repository gives no
  command for them, so their values are ours.
- `rtd train-phi --preset lincir-vit-l14` is LinCIR's README command
  (`navervision/lincir:README.md`, `--clip_model_name large`): batch 64 per GPU on 8 GPUs,
  20000 steps, seed 12345, constant LR, with `train_phi.py`'s defaults for the rest (AdamW
  lr 1e-4, weight decay 0.01, phi dropout 0.5, noise 1.0). The README says to change only
  `--clip_model_name` for ViT-G (`giga`), so `lincir-vit-bigg14` keeps those values;
  `lincir-vit-b32` (LinCIR names no B/32 command) keeps them too, which is ours.
- `toy` (both commands): the tiny CLIP of the toy world, minutes on 2 CPU cores.

bigG weights: open_clip `ViT-bigG-14` / `laion2b_s39b_b160k`, the LAION-2B model LinCIR
loads as `Geonmo/CLIP-Giga-config-fixed` (method brief section 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from labshared.config import RUNTIME_KNOBS
from labshared.data.composed_retrieval import DATASETS
from labshared.errors import ConfigError
from labshared.options import opt, quick_gelu_field, seed_field

BASE_NAMES = ("lincir", "searle", "pic2word")

#: The toy benchmark `rtd eval --dataset toy` scores by default (and so the demo and its
#: effect gate): 1,000 composed queries, whose 1,000 targets plus 1,000 random distractors
#: of the same split make a 2,000-image gallery.
TOY_EVAL_QUERIES = 1000
TOY_EVAL_DISTRACTORS = 1000


#: Fields a resumed `rtd train` may change besides RUNTIME_KNOBS: how the step is executed,
#: not what it computes (each is tested equal to the plain path: compiled tower, recomputed
#: activations, cached frozen anchors), so a resumed run may switch them on another machine.
TRAIN_KNOBS = RUNTIME_KNOBS | {"compile", "grad_checkpointing", "cache_anchors"}


TRAIN_PANEL = "Training"
DATA_PANEL = "Data"
VAL_PANEL = "Validation"
CLIP_PANEL = "CLIP"


# The fields `rtd train`, `rtd train-phi` (and `rtd eval`) share: one declaration each.
def backbone_field(default: str | None = "ViT-B-32") -> str | None:
    return opt(
        default,
        "open_clip architecture (ViT-B-32, ViT-L-14, tiny-clip-toy, ...).",
        panel=CLIP_PANEL,
    )


def pretrained_field(default: str | None = "openai") -> str | None:
    return opt(
        default,
        "open_clip weight tag or local checkpoint; 'random' for none (none: the "
        "backbone's default weights).",
        panel=CLIP_PANEL,
    )


def toyseed_field() -> int:
    return opt(
        0,
        "Data seed of the toy world: draws the toy captions / triplets and the toy "
        "benchmark's queries, gallery and distractors (--seed is the training seed).",
        panel=DATA_PANEL,
    )


def _steps_field(default: int) -> int:
    return opt(default, "Optimizer steps.", panel=TRAIN_PANEL)


def _checkpoint_every_field(default: int) -> int:
    return opt(
        default,
        "Steps between resumable checkpoints (the last step always saves).",
        panel=TRAIN_PANEL,
    )


def _keep_last_field() -> int:
    return opt(2, "Resumable checkpoints kept on disk (older ones are deleted).", panel=TRAIN_PANEL)


def _log_every_field(default: int) -> int:
    return opt(default, "Steps between log lines (and metrics.jsonl rows).", panel=TRAIN_PANEL)


@dataclass(frozen=True)
class TrainConfig:
    """`rtd train`: RTD fine-tuning of the CLIP text tower (brief section 1.3). Each field
    is the flag of the same name; its help says what it is."""

    backbone: str = backbone_field()
    pretrained: str | None = pretrained_field()
    quick_gelu: bool | None = quick_gelu_field()
    base: str = opt(
        "lincir",
        "Base method of --phi: lincir, searle (Phi, '$') or pic2word (IM2TEXT, '*').",
        choices=BASE_NAMES,
    )
    phi: str | None = opt(
        None,
        "Projection checkpoint of the base ({'Phi': ...} or Pic2Word's "
        "state_dict_img2text); required.",
    )
    prompt: str | None = opt(
        None,
        "Query prompt style, as `rtd eval --prompt`: rtd ('a photo "
        "of $ that {mod}') or base (the base's own; Pic2Word 'a photo of "
        "* , {mod}'). Default: base for pic2word, rtd otherwise.",
        choices=("rtd", "base"),
    )
    triplets: str | None = opt(
        None,
        "Text triplets: LLM_triplets.json, a .jsonl file, a "
        "save_to_disk folder, a hub id, or toy[:N].",
        panel=DATA_PANEL,
    )
    triplet_columns: str | None = opt(
        None,
        "Column map, e.g. 'ref=source_caption,cond=instruction,target=target_caption'.",
        panel=DATA_PANEL,
    )
    triplet_split: str = opt("train", "Split of a hub dataset or DatasetDict.", panel=DATA_PANEL)
    triplet_limit: int | None = opt(None, "Use only the first N rows.", panel=DATA_PANEL)
    toy_seed: int = toyseed_field()
    noise_scale: float = opt(
        0.5, "sigma of the phi-input noise e + sigma*U(0,1)*N(0,I) (paper 0.5).", panel=TRAIN_PANEL
    )
    tau: float = opt(0.07, "Temperature of the contrastive loss (paper 0.07).", panel=TRAIN_PANEL)
    steps: int = _steps_field(2000)
    batch_size: int = opt(
        128,
        "Triplets per process per step (paper 128: the official 4 GPUs "
        "never averaged gradients, so one process at 128).",
        panel=TRAIN_PANEL,
    )
    lr: float = opt(1e-5, "AdamW learning rate, constant (paper 1e-5).", panel=TRAIN_PANEL)
    weight_decay: float = opt(0.01, "AdamW weight decay (paper 0.01).", panel=TRAIN_PANEL)
    max_grad_norm: float | None = opt(
        None, "Clip the gradient norm (paper: no clipping).", panel=TRAIN_PANEL
    )
    train_layers: str | None = opt(
        None,
        "Train only these comma-separated parameter prefixes, "
        "e.g. 'transformer.resblocks.11,ln_final,text_projection' "
        "(none: the whole tower).",
        panel=TRAIN_PANEL,
    )
    gather_negatives: bool = opt(
        False,
        "All-gather negatives across torchrun ranks (paper: local, per GPU).",
        panel=TRAIN_PANEL,
        flag="--gather-negatives/--local-negatives",
    )
    checkpoint_every: int = _checkpoint_every_field(500)
    keep_last: int = _keep_last_field()
    val_dataset: str | None = opt(
        None,
        "Validate every --val-every steps on this `rtd eval` dataset (toy, cirr, ...).",
        panel=VAL_PANEL,
        choices=tuple(DATASETS),
    )
    val_root: str | None = opt(None, "Root folder of --val-dataset.", panel=VAL_PANEL)
    val_every: int = opt(100, "Steps between validations.", panel=VAL_PANEL)
    keep_best: str | None = opt(
        None,
        "Also keep the tower best on this validation metric in "
        "best/ (none: report the fixed-step model only).",
        panel=VAL_PANEL,
    )
    cache_anchors: bool = opt(
        False,
        "Encode the frozen anchors (T_t, T_r) of the whole triplet "
        "set once (cached) instead of in every step; pays when the set "
        "is read more than once.",
        panel=TRAIN_PANEL,
    )
    compile: bool = opt(False, "torch.compile the trainable text tower.", panel=TRAIN_PANEL)
    grad_checkpointing: bool = opt(
        False,
        "Recompute the trainable tower's activations in "
        "backward (less memory, ~1/3 more compute; for ViT-H/bigG).",
        panel=TRAIN_PANEL,
    )
    log_every: int = _log_every_field(10)
    seed: int = seed_field(12345)


@dataclass(frozen=True)
class PhiConfig:
    """`rtd train-phi`: LinCIR-style text-only training of the projection (keyword masking
    + MSE). Each field is the flag of the same name."""

    backbone: str = backbone_field()
    pretrained: str | None = pretrained_field()
    quick_gelu: bool | None = quick_gelu_field()
    base: str = opt(
        "lincir",
        "Projection to train: lincir/searle (Phi, '$') or pic2word (IM2TEXT, '*').",
        choices=BASE_NAMES,
    )
    captions: str | None = opt(
        None,
        "Captions: .txt (one a line), .json, .jsonl, a save_to_disk folder, a hub id, or toy[:N].",
        panel=DATA_PANEL,
    )
    caption_column: str = opt(
        "text", "Field holding the caption (LinCIR's hub sets: text).", panel=DATA_PANEL
    )
    caption_limit: int | None = opt(None, "Use only the first N captions.", panel=DATA_PANEL)
    toy_seed: int = toyseed_field()
    keywords: str = opt(
        "auto",
        "Keyword masking: spacy (LinCIR's rule with en_core_web_sm; "
        "the lincir presets' default, which stops if it is not installed), "
        "builtin (the built-in approximation), auto (spacy if installed, else "
        "builtin).",
        panel=TRAIN_PANEL,
        choices=("auto", "spacy", "builtin"),
    )
    noise_scale: float = opt(1.0, "sigma of the input noise (LinCIR 1.0).", panel=TRAIN_PANEL)
    dropout: float | None = opt(
        None,
        "Projection dropout while training (none: the base's, "
        "Phi 0.5 as LinCIR, IM2TEXT 0.1 as Pic2Word).",
        panel=TRAIN_PANEL,
    )
    steps: int = _steps_field(50000)
    batch_size: int = opt(256, "Captions per process per step (LinCIR 256).", panel=TRAIN_PANEL)
    lr: float = opt(1e-4, "AdamW learning rate (LinCIR 1e-4).", panel=TRAIN_PANEL)
    weight_decay: float = opt(0.01, "AdamW weight decay (LinCIR 0.01).", panel=TRAIN_PANEL)
    checkpoint_every: int = _checkpoint_every_field(1000)
    keep_last: int = _keep_last_field()
    log_every: int = _log_every_field(50)
    seed: int = seed_field(0)


# The values shared by every RTD preset: the official run's (RTD README / run.sh).
_RTD_RUN = dict(steps=2000, batch_size=128, lr=1e-5, weight_decay=0.01, noise_scale=0.5,
                tau=0.07, seed=12345)  # fmt: skip

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # What the official RTD run computed: ViT-L/14 OpenAI, one process at batch 128 (its 4
    # ranks never averaged gradients; rank 0's copy was saved). Run without torchrun.
    "rtd-vit-l14": TrainConfig(backbone="ViT-L-14", pretrained="openai", **_RTD_RUN),
    # The same values with the gradients of 4 processes x 128 averaged by DDP (512 triplets
    # per step): what run.sh's launch line suggests, not what its code computed.
    "rtd-vit-l14-ddp4": TrainConfig(backbone="ViT-L-14", pretrained="openai", **_RTD_RUN),
    # Ours: the paper reports ViT-B/32 for every base but gives no command; the official
    # run's values on ViT-B/32 OpenAI.
    "rtd-vit-b32": TrainConfig(backbone="ViT-B-32", pretrained="openai", **_RTD_RUN),
    # Ours: the paper reports LinCIR+RTD on ViT-G/14 but gives no command; the official
    # run's values on LinCIR's bigG weights. Batch 128 of a ~0.7B-parameter text tower with
    # AdamW needs a large GPU; --grad-checkpointing saves activation memory (a smaller
    # --batch-size changes the objective: negatives are per process).
    "rtd-vit-bigg14": TrainConfig(
        backbone="ViT-bigG-14", pretrained="laion2b_s39b_b160k", **_RTD_RUN
    ),
    # Tiny CLIP of the toy world: minutes on 2 CPU cores. A larger LR because the tiny
    # tower trains from a poorer start and for 60 steps only.
    "toy": TrainConfig(
        backbone="tiny-clip-toy",
        pretrained=None,  # the fitted toy weights (labshared.tinyclip)
        triplets="toy",
        steps=60,
        batch_size=64,
        lr=1e-4,
        checkpoint_every=20,
        val_every=20,
        log_every=5,
    ),
}

# LinCIR's README command (8 GPUs x 64, 20000 steps, seed 12345) over train_phi.py's
# defaults (lr 1e-4, weight decay 0.01, noise 1.0, dropout 0.5).
# keywords="spacy": LinCIR masks with spaCy's en_core_web_sm (loader.py line 225); without
# it the run stops and says how to install it, unless --keywords builtin is passed.
_LINCIR_RUN = dict(steps=20000, batch_size=64, lr=1e-4, weight_decay=0.01, noise_scale=1.0,
                   seed=12345, keywords="spacy")  # fmt: skip

#: The process count each preset was designed for: `rtd train` / `train-phi` started with
#: another count say so in one line naming the global batch (`labshared.launch`).
TRAIN_PRESET_PROCESSES = {"rtd-vit-l14": 1, "rtd-vit-l14-ddp4": 4, "rtd-vit-b32": 1,
                          "rtd-vit-bigg14": 1, "toy": 1}  # fmt: skip

PHI_PRESETS: dict[str, PhiConfig] = {
    # LinCIR's README run (--clip_model_name large); launch on 8 GPUs with torchrun.
    "lincir-vit-l14": PhiConfig(backbone="ViT-L-14", pretrained="openai", **_LINCIR_RUN),
    # LinCIR's README: "change --clip_model_name to ... giga", nothing else.
    "lincir-vit-bigg14": PhiConfig(
        backbone="ViT-bigG-14", pretrained="laion2b_s39b_b160k", **_LINCIR_RUN
    ),
    # Ours: LinCIR gives no ViT-B/32 command; the README run's values on ViT-B/32 OpenAI.
    "lincir-vit-b32": PhiConfig(backbone="ViT-B-32", pretrained="openai", **_LINCIR_RUN),
    "toy": PhiConfig(
        backbone="tiny-clip-toy",
        pretrained=None,  # the fitted toy weights (labshared.tinyclip)
        captions="toy",
        steps=200,
        batch_size=128,
        lr=1e-3,
        checkpoint_every=100,
        log_every=25,
        keywords="builtin",
    ),
}


#: LinCIR's `train_phi.py` calls phi through the DDP wrapper (`phi(input_features)`, line
#: 237), so its 8 x 64 run averages gradients over 512 captions; its README (line 90) says
#: one GPU at batch 256 or 512 gives consistent results.
PHI_PRESET_PROCESSES = {"lincir-vit-l14": 8, "lincir-vit-bigg14": 8, "lincir-vit-b32": 8,
                        "toy": 1}  # fmt: skip


# Earlier preset names, so that an old command says what replaced it.
RENAMED_PRESETS = {
    "paper": "rtd-vit-b32 (its old values) or rtd-vit-l14 (the official RTD run)",
    "paper-vit-l14": "rtd-vit-l14",
    "lincir": "lincir-vit-b32 (now with LinCIR's README values) or lincir-vit-l14",
}


def _check_common(cfg: TrainConfig | PhiConfig) -> None:
    """The checks `rtd train` and `rtd train-phi` share, naming the flag."""
    positive = {"steps": cfg.steps, "batch-size": cfg.batch_size, "lr": cfg.lr,
                "checkpoint-every": cfg.checkpoint_every, "log-every": cfg.log_every}  # fmt: skip
    for flag, value in positive.items():
        if value <= 0:
            raise ConfigError(f"--{flag} must be positive, got {value}")
    for flag, value in {"noise-scale": cfg.noise_scale, "weight-decay": cfg.weight_decay,
                        "toy-seed": cfg.toy_seed}.items():  # fmt: skip
        if value < 0:
            raise ConfigError(f"--{flag} must be >= 0, got {value}")


def validate_train(cfg: TrainConfig) -> None:
    """Reject a bad `rtd train` config before anything loads, naming the flag and the fix."""
    _check_common(cfg)
    if cfg.tau <= 0:
        raise ConfigError(f"--tau must be positive, got {cfg.tau}")
    if cfg.phi is None:
        raise ConfigError(
            "--phi is required: the projection checkpoint of the base method (LinCIR/SEARLE "
            "Phi or Pic2Word IM2TEXT); make one with `rtd train-phi`"
        )
    if cfg.triplets is None:
        raise ConfigError(
            "--triplets is required (a .json/.jsonl file, a folder, a hub id or 'toy')"
        )
    if cfg.keep_best and not cfg.val_dataset:
        raise ConfigError("--keep-best needs --val-dataset (the metric is computed on it)")
    if cfg.val_dataset and cfg.val_every <= 0:
        raise ConfigError(f"--val-every must be positive, got {cfg.val_every}")
    if cfg.max_grad_norm is not None and cfg.max_grad_norm <= 0:
        raise ConfigError(f"--max-grad-norm must be positive, got {cfg.max_grad_norm}")


def validate_phi(cfg: PhiConfig) -> None:
    """Reject a bad `rtd train-phi` config before anything loads, naming the flag."""
    _check_common(cfg)
    if cfg.captions is None:
        raise ConfigError(
            "--captions is required (a .txt/.json/.jsonl file, a folder, a hub id or 'toy')"
        )
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {cfg.dropout}")
