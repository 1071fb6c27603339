"""The configs of `rtd train`, `rtd train-phi` and `rtd eval`, and the train presets:
frozen dataclasses whose fields carry their flags (`labshared.options.opt`).

Precedence: dataclass defaults < preset < `--config` file < flags actually passed (`None` =
keep the preset), applied by `labshared.options.config_command` with `validate_train` /
`validate_phi` / `validate_eval` and `RENAMED_PRESETS`. `rtd eval` has no presets: its
defaults are `EvalConfig`'s.

Presets are named for what they are, `<method>-<backbone>`; where each value comes from is
said beside it (the official RTD run, LinCIR's README command, or ours), and README
"Defaults and how to change them" tells the story, with "One process, not four" for why
`rtd-vit-l14` is one process at batch 128. `toy` (both commands): the tiny CLIP of the toy
world, minutes on 2 CPU cores. bigG weights: open_clip `ViT-bigG-14` / `laion2b_s39b_b160k`,
the LAION-2B model LinCIR loads as `Geonmo/CLIP-Giga-config-fixed` (method brief 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labshared.config import RUNTIME_KNOBS, split_commas
from labshared.data.composed_retrieval import DATASETS
from labshared.errors import ConfigError
from labshared.options import opt, quick_gelu_field, seed_field

#: The bases (`projection.BASES`) and prompt styles (`projection.PROMPT_STYLES`) the flags
#: accept; kept here so that reading a config imports no model code.
BASE_NAMES = ("lincir", "searle", "pic2word")
PROMPT_STYLES = ("rtd", "base")
FIQ_ORDERS = ("both", "single")
DECODES = ("cpu", "gpu", "auto")  # where `rtd eval` decodes JPEGs (rtd_cli.gallery_loader)
DEFAULT_BACKBONE = "ViT-B-32"  # `rtd eval --backbone` on the real benchmarks
TOY_BACKBONE = "tiny-clip-toy"  # and on the toy's: fitted offline, as `--preset toy` uses

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
BENCH_PANEL = "Benchmark"
MODEL_PANEL = "Model"


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


def toyseed_field(panel: str = DATA_PANEL) -> int:
    return opt(
        0,
        "Data seed of the toy world: draws the toy captions / triplets and the toy "
        "benchmark's queries, gallery and distractors (--seed is the run's own seed).",
        panel=panel,
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
        choices=PROMPT_STYLES,
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
    # (pretrained None: the fitted toy weights, labshared.tinyclip)
    "toy": TrainConfig(backbone="tiny-clip-toy", pretrained=None, triplets="toy", steps=60,
                       batch_size=64, lr=1e-4, checkpoint_every=20, val_every=20,
                       log_every=5),
}  # fmt: skip

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
    "toy": PhiConfig(backbone="tiny-clip-toy", pretrained=None, captions="toy", steps=200,
                     batch_size=128, lr=1e-3, checkpoint_every=100, log_every=25,
                     keywords="builtin"),
}  # fmt: skip


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


def _check_signs(cfg, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()):
    """Each named field (None aside) is > 0 / >= 0, else one error naming its flag."""
    for name in (*positive, *non_negative):
        value, strict = getattr(cfg, name), name in positive
        if value is not None and (value <= 0 if strict else value < 0):
            want = "positive" if strict else ">= 0"
            raise ConfigError(f"--{name.replace('_', '-')} must be {want}, got {value}")


def _check_common(cfg: TrainConfig | PhiConfig) -> None:
    """The checks `rtd train` and `rtd train-phi` share, naming the flag."""
    _check_signs(cfg, ("steps", "batch_size", "lr", "checkpoint_every", "log_every"),
                 ("noise_scale", "weight_decay", "toy_seed"))  # fmt: skip


def validate_train(cfg: TrainConfig) -> None:
    """Reject a bad `rtd train` config before anything loads, naming the flag and the fix."""
    _check_common(cfg)
    _check_signs(cfg, ("tau", "max_grad_norm"))
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
    if cfg.val_dataset:
        _check_signs(cfg, ("val_every",))


def validate_phi(cfg: PhiConfig) -> None:
    """Reject a bad `rtd train-phi` config before anything loads, naming the flag."""
    _check_common(cfg)
    if cfg.captions is None:
        raise ConfigError(
            "--captions is required (a .txt/.json/.jsonl file, a folder, a hub id or 'toy')"
        )
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {cfg.dropout}")


@dataclass(frozen=True)
class EvalConfig:
    """`rtd eval`: score a projection-based ZS-CIR method, with or without an RTD text
    tower (the resolved config saved in config.json). Each field is the flag of the same
    name. `backbone` and `prompt` left unset are completed when the command resolves
    (`rtd_cli.commands.eval.finish_eval`)."""

    dataset: str | None = opt(None, "Benchmark: fashioniq, cirr, circo, genecis or toy; "
                              "required.", panel=BENCH_PANEL, choices=tuple(DATASETS))  # fmt: skip
    base: str = opt("lincir", "Base method: pic2word (IM2TEXT), searle or lincir (Phi).",
                    panel=MODEL_PANEL, choices=BASE_NAMES)  # fmt: skip
    phi: Path | None = opt(
        None, "Projection checkpoint of --base in its official format ({'Phi': ...} or "
        "Pic2Word's {'state_dict_img2text': ...}); required.", panel=MODEL_PANEL,
    )  # fmt: skip
    backbone: str | None = opt(
        None, f"open_clip architecture: {DEFAULT_BACKBONE}, ViT-L-14, ViT-H-14, ViT-bigG-14, "
        f"{TOY_BACKBONE} or local-dir:PATH (none: {TOY_BACKBONE} for --dataset toy, else "
        f"{DEFAULT_BACKBONE}).", panel=MODEL_PANEL,
    )  # fmt: skip
    split: str | None = opt(None, "val or test (none: val; test for genecis). CIRR/CIRCO test "
                            "write server files.", panel=BENCH_PANEL)  # fmt: skip
    pretrained: str | None = opt(
        None, "open_clip weight tag or local checkpoint file (none: openai for B-32/L-14, "
        "laion2b_s32b_b79k for H-14, laion2b_s39b_b160k for bigG, the fitted toy weights for "
        "tiny-clip-toy); 'random' for none.", panel=MODEL_PANEL,
    )  # fmt: skip
    quick_gelu: bool | None = quick_gelu_field(MODEL_PANEL)
    text_encoder: Path | None = opt(
        None, "Text tower trained by `rtd train` (text_tower.safetensors or its folder); none: "
        "the backbone's own text tower.", panel=MODEL_PANEL,
    )  # fmt: skip
    data_root: Path | None = opt(
        None, "Benchmark folder in its official layout (see README), or 'hf' for the Hugging "
        "Face copies of CIRR/FashionIQ; not needed for toy.", panel=BENCH_PANEL,
    )  # fmt: skip
    prompt: str | None = opt(
        None, "rtd: 'a photo of $ that {mod}' for every base (RTD's evaluation); base: each "
        "base repo's own prompt (Pic2Word 'a photo of * , {mod}'). None: the style the "
        "--text-encoder was trained with, else the base's (as `rtd train`): base for "
        "pic2word, rtd for searle/lincir.", panel=MODEL_PANEL, choices=PROMPT_STYLES,
    )  # fmt: skip
    fiq_orders: str | None = opt(
        None, "FashionIQ captions: both (c1 and c2 + c2 and c1, averaged; SEARLE/LinCIR/RTD) "
        "or single (Pic2Word's c2 and c1). None: follows --prompt and --base.",
        panel=BENCH_PANEL, choices=FIQ_ORDERS,
    )  # fmt: skip
    parts: tuple[str, ...] | None = opt(
        None, "Comma-separated FashionIQ categories (dress,shirt,toptee) or GeneCIS tasks "
        "(focus_attribute,change_attribute,focus_object,change_object); none: all.",
        panel=BENCH_PANEL, cli_type=str, parse=split_commas,
    )  # fmt: skip
    batch_size: int = opt(128, "Images per encoding batch.")
    text_batch_size: int = opt(256, "Prompts per text-encoding batch.")
    workers: int | None = opt(None, "DataLoader workers decoding images (none: on CUDA every "
                              "core of this process's share but one, on CPU 0).")  # fmt: skip
    decode: str = opt(
        "cpu", "Where JPEGs are decoded: cpu (PIL in the workers), gpu (torchvision "
        "decode_jpeg on the CUDA device, pixels within 1/255 of PIL's; other files stay on "
        "PIL) or auto (gpu where available, else cpu).", choices=DECODES,
    )  # fmt: skip
    toy_queries: int = opt(TOY_EVAL_QUERIES, "Toy benchmark: composed queries, whose targets "
                           "open the gallery.", panel=BENCH_PANEL)  # fmt: skip
    toy_distractors: int | None = opt(
        TOY_EVAL_DISTRACTORS, "Toy benchmark: random images of the split added to the gallery.",
        panel=BENCH_PANEL,
    )  # fmt: skip
    toy_seed: int = toyseed_field(BENCH_PANEL)


def validate_eval(cfg: EvalConfig) -> None:
    """Reject a bad `rtd eval` config before anything loads, naming the flag (the choices
    of --dataset, --base, --prompt, --fiq-orders and --decode are their fields')."""
    if cfg.dataset is None or cfg.phi is None:
        raise ConfigError("--dataset and --phi are required")
    _check_signs(cfg, ("batch_size", "text_batch_size", "toy_queries"),
                 ("toy_distractors", "workers", "toy_seed"))  # fmt: skip
