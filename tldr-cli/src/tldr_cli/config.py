"""The configs of every tldr command (frozen dataclasses), each field declared once with
its flag (`labshared.options.opt`): `TLDRConfig` and its presets for `tldr erm`, `filter`
and `retrain` (and `check-data`), `GenerateConfig` for `tldr generate`.

Precedence: dataclass defaults < preset < `--config FILE` < flags actually passed
(`labshared.options.config_command`). Every flag has the name of the field it sets
(`--erm-recipe` <-> `erm_recipe`, `--head-lr` <-> `head_lr`). What a config names on disk
is checked by `tldr_cli.inputs` before a run folder is made. The `waterbirds` and `celeba`
presets carry the paper repo's settings (`TLDR:script.sh`): lambda 50, AdamW lr 1e-4, wd
1e-4, batch 128, 1 epoch, ViT-B/32 OpenAI CLIP, ResNet-50 ImageNet weights, 1000
COCO-2014-val caption pairs for the gap, DFR's C grid and 20 retrains. `toy` is the
offline world (tiny CLIP, toy CNN) sized to run in seconds on a CPU.

This module imports no model code: the commands read it to build their options, and
`tldr --help` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from labshared.config import RUNTIME_KNOBS, float_list
from labshared.data.group_shift import GROUP_SHIFT_DATASETS
from labshared.errors import ConfigError
from labshared.options import opt, quick_gelu_field
from tldr_cli.presets import get_preset


@dataclass(frozen=True)
class ErmRecipe:
    """How the ERM classifier is trained (SGD with momentum, constant LR).

    `paper-repo` is `TLDR:script.sh` (1 epoch, lr 1e-4, wd 0.01, batch 32, no augmentation);
    `dfr-waterbirds` / `dfr-celeba` are DFR's standard protocol (DFR README).

    `preprocess` names the image transforms the classifier is trained and evaluated with
    (`classifier.classifier_transform`), recorded beside its weights so features are
    always extracted the way it was trained: `dataset` is TLDR's per-dataset evaluation
    transform (`TLDR:datasets/dataset_factory.py`: CelebA CenterCrop 178 -> Resize 224,
    the others Resize 256x256 -> CenterCrop 224); `dfr` is DFR's `get_transform_cub`, which
    DFR's `train_classifier.py` and `dfr_evaluate_spurious.py` use for Waterbirds AND
    CelebA: evaluation Resize 256x256 -> CenterCrop 224 of the full image, training
    RandomResizedCrop(224, scale 0.7-1) + flip of the same full image.
    """

    name: str
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    momentum: float = 0.9
    augment: bool = False
    preprocess: str = "dataset"


_DFR = {"augment": True, "preprocess": "dfr"}  # DFR's recipes: augmented, DFR's transforms
ERM_RECIPES: dict[str, ErmRecipe] = {
    r.name: r
    for r in (
        ErmRecipe("paper-repo", epochs=1, lr=1e-4, weight_decay=1e-2, batch_size=32),
        ErmRecipe("dfr-waterbirds", epochs=100, lr=1e-3, weight_decay=1e-3, batch_size=32, **_DFR),
        # DFR trains AND evaluates CelebA on the full image (its Waterbirds transforms),
        # not on TLDR's centre crop 178: train and evaluation views must agree.
        ErmRecipe("dfr-celeba", epochs=50, lr=1e-3, weight_decay=1e-4, batch_size=128, **_DFR),
        # toy: starts from the digit-pretrained CNN (design.md); a gentle fine-tune on the
        # biased data, as the real recipes fine-tune ImageNet weights (lr 1e-4 / 1e-3). At
        # lr 2e-2 the toy CNN relearns digits from the 5 % minority (ERM worst group 20 %,
        # seed 0); at 5e-3 it follows the background (4 %), the regime TLDR is for.
        ErmRecipe("toy", epochs=4, lr=5e-3, weight_decay=1e-4, batch_size=64),
    )
}

TEMPLATE_DRAWS = ("all", "official")
TEMPLATE_SETS = ("imagenet", "toy")
PREPROCESS_EMBEDS = ("none", "clip_normalize")
METHODS = ("tldr", "dfr", "both")
CLIP_INPUTS = ("clip", "classifier")
ARCHS = ("resnet50", "toy-cnn")
PREPROCESSES = ("dataset", "dfr")
# Precision of the frozen forward passes (classifier features, CLIP image embeddings).
# "runtime" follows --precision (bf16 autocast on recent GPUs); the others are explicit.
FEATURE_PRECISIONS = ("fp32", "bf16", "fp16", "runtime")
#: DFR's grid of inverse L1 strengths (`dfr_evaluate_spurious.py` L25).
C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)

DATA, CLASSIFIER, CLIP, PROJECTOR, HEAD, DFR, RUNTIME = (
    "Data", "Classifier", "CLIP", "Projector", "Head", "DFR", "Runtime"
)  # fmt: skip


@dataclass(frozen=True)
class TLDRConfig:
    """Every setting of a filter / retrain / erm run; each field is set by the flag of the
    same name (`erm_recipe` by `--erm-recipe`), its help is in `opt(...)`. `name` is the
    preset's own name (not a flag)."""

    name: str
    dataset: str = opt(
        help="Dataset: toy, waterbirds, celeba, spuco-animals, or hf (a Hugging Face copy).",
        panel=DATA, choices=GROUP_SHIFT_DATASETS,
    )  # fmt: skip
    words: Path | None = opt(
        None, "Word-list JSON (from `tldr generate`, or `tldr filter` for retrain); needed by "
        "filter and by retrain with --method tldr/both.",
    )  # fmt: skip
    classifier: str | None = opt(
        None, "Trained classifier: a `tldr erm` run folder, a checkpoint folder, or a "
        "torchvision ResNet-50 state dict. Without it ERM is trained with the preset's "
        "recipe (cached).", panel=CLASSIFIER,
    )  # fmt: skip
    method: str = opt(
        "both", "tldr (text, no group labels), dfr (group-labelled val images) or both.",
        choices=METHODS,
    )  # fmt: skip
    data_root: str | None = opt(
        None, "Dataset folder in its official layout (for hf: hub id or save_to_disk folder).",
        panel=DATA,
    )  # fmt: skip
    arch: str = opt(
        "resnet50", "Classifier architecture for ERM: resnet50 or toy-cnn.", panel=CLASSIFIER,
        choices=ARCHS,
    )  # fmt: skip
    backbone_weights: str | None = opt(
        "IMAGENET1K_V1", "ERM initialisation: torchvision enum (IMAGENET1K_V1, downloads "
        "once), a local .pth/.safetensors ResNet-50 state dict, toy-digits (toy CNN), or none.",
        panel=CLASSIFIER,
    )  # fmt: skip
    erm_recipe: str = opt(
        "paper-repo", "ERM recipe: paper-repo (TLDR script.sh), dfr-waterbirds, dfr-celeba or "
        "toy.", panel=CLASSIFIER, choices=ERM_RECIPES,
    )  # fmt: skip
    clip_model: str = opt(
        "ViT-B-32", "open_clip model name (ViT-B-32), or tiny-clip-toy.", panel=CLIP
    )
    clip_pretrained: str = opt(
        "openai", "open_clip pretrained tag (openai) or a local weights file.", panel=CLIP
    )
    quick_gelu: bool | None = quick_gelu_field(CLIP)
    clip_input: str = opt(
        "clip", "What CLIP embeds for the projector: clip (its own preprocessing) or "
        "classifier (the official code's ImageNet-normalised tensors).", panel=CLIP,
        choices=CLIP_INPUTS,
    )  # fmt: skip
    gap_pairs: str | None = opt(
        None, "Image-caption pairs for the modality gap: a COCO captions folder, a JSONL "
        "file, or toy.", panel=PROJECTOR,
    )  # fmt: skip
    n_gap_pairs: int = opt(1000, "Pairs used for the mean gap (paper repo 1000).",
                           panel=PROJECTOR)  # fmt: skip
    preprocess_embed: str = opt(
        "none", "CLIP embeddings into the projector: none (raw, the paper's script) or "
        "clip_normalize (the official option: L2-normalised images, gap and words).",
        panel=PROJECTOR, choices=PREPROCESS_EMBEDS,
    )  # fmt: skip
    ridge_lambda: float = opt(
        50.0, "Ridge penalty lambda of the projector (paper presets 50; toy: see the preset).",
        panel=PROJECTOR,
    )  # fmt: skip
    head_lr: float = opt(
        1e-4, "AdamW learning rate of the new head (paper presets 1e-4; toy 3e-2).", panel=HEAD
    )
    head_weight_decay: float = opt(1e-4, "AdamW weight decay of the new head (1e-4).",
                                   panel=HEAD)  # fmt: skip
    head_batch_size: int = opt(128, "Text pairs per batch (128).", panel=HEAD)
    head_epochs: int = opt(1, "Epochs of the new head (paper presets 1; toy 200).", panel=HEAD)
    templates: str = opt(
        "imagenet", "Caption templates the words are embedded in: imagenet (the 80 OpenAI "
        "ImageNet templates, paper presets) or toy (the tiny CLIP's caption forms, "
        "`textdata.TOY_TEMPLATES`; toy preset).", panel=HEAD, choices=TEMPLATE_SETS,
    )  # fmt: skip
    template_draw: str = opt(
        "all", "Template draw: all (uniform over the templates) or official (randint(0, 79): "
        "the last template is never drawn).", panel=HEAD, choices=TEMPLATE_DRAWS,
    )  # fmt: skip
    dfr_c_grid: tuple[float, ...] = opt(
        C_GRID, "DFR's grid of inverse L1 strengths C, comma-separated (DFR: 1,0.7,0.3,0.1,"
        "0.07,0.03,0.01).", panel=DFR, cli_type=str, parse=float_list,
    )  # fmt: skip
    dfr_retrains: int = opt(20, "DFR fits averaged (20).", panel=DFR)
    toy_n_train: int = opt(2000, "Toy world: training images.", panel=DATA)
    toy_n_val: int = opt(400, "Toy world: validation images (DFR's group-labelled set).",
                         panel=DATA)  # fmt: skip
    toy_n_test: int = opt(800, "Toy world: test images.", panel=DATA)
    toy_corr: float = opt(
        0.95, "Toy world: share of training images whose background agrees with their "
        "class (the spurious correlation, 0..1).", panel=DATA,
    )  # fmt: skip
    toy_size: int = 32
    toy_seed: int = opt(
        0, "Toy world: data seed of the spurious split (which digits, colours and crops); "
        "separate from --seed, which drives training.", panel=DATA,
    )  # fmt: skip
    feature_batch_size: int = opt(256, "Batch size of frozen-feature extraction.",
                                  panel=RUNTIME)  # fmt: skip
    num_workers: int = opt(4, "DataLoader worker processes.", panel=RUNTIME)
    feature_precision: str = opt(
        "fp32", "Autocast of the frozen classifier / CLIP image forward passes: fp32 (default, "
        "as the official code), bf16, fp16 (CUDA) or runtime (follow --precision). Part of "
        "the feature cache keys.", panel=RUNTIME, choices=FEATURE_PRECISIONS,
    )  # fmt: skip

    def __post_init__(self) -> None:
        # the names are checked by `choices` (labshared.config.resolve); these are ranges
        checks = [
            (self.ridge_lambda > 0, f"--ridge-lambda {self.ridge_lambda}: expected > 0"),
            (self.head_epochs >= 1, f"--head-epochs {self.head_epochs}: expected >= 1"),
            (self.head_lr > 0, f"--head-lr {self.head_lr}: expected > 0"),
            (self.head_batch_size >= 1, f"--head-batch-size {self.head_batch_size}: expected >= 1"),
            (self.n_gap_pairs >= 1, f"--n-gap-pairs {self.n_gap_pairs}: expected >= 1"),
            (self.dfr_retrains >= 1, f"--dfr-retrains {self.dfr_retrains}: expected >= 1"),
            (0.0 <= self.toy_corr <= 1.0, f"--toy-corr {self.toy_corr}: expected a probability"),
            (len(self.dfr_c_grid) >= 1, "--dfr-c-grid: expected at least one value of C"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def recipe(self) -> ErmRecipe:
        return ERM_RECIPES[self.erm_recipe]


PRESETS: dict[str, TLDRConfig] = {
    p.name: p
    for p in (
        TLDRConfig(
            name="toy",
            dataset="toy",
            arch="toy-cnn",
            backbone_weights="toy-digits",
            erm_recipe="toy",
            clip_model="tiny-clip-toy",
            clip_pretrained="fitted",
            gap_pairs="toy",
            n_gap_pairs=1000,
            # The tiny CLIP's raw image embeddings are ~4x longer than its text embeddings
            # (58 vs 15, measured), so raw text would reach the projector at a quarter of
            # the scale it was fitted on; the official clip_normalize option removes that.
            preprocess_embed="clip_normalize",
            # The toy's own caption forms: the tiny CLIP never saw "a bad photo of a {}."
            templates="toy",
            # lambda 50 is for raw CLIP embeddings; on unit-norm inputs (clip_normalize) it
            # over-shrinks W: held-out R^2 of the projector on toy val images (no labels)
            # 0.722 at 50, 0.804 at 0.5 (measured; README).
            ridge_lambda=0.5,
            # Our choice for the toy world: the text set has about a thousand pairs (nine
            # steps an epoch), so the paper's single epoch at lr 1e-4 leaves the fresh head
            # untrained; these settings run it to a flat loss (1.26 -> 0.02, loss chart).
            head_lr=3e-2,
            head_epochs=200,
            dfr_retrains=20,
            feature_batch_size=512,
            num_workers=0,
        ),
        TLDRConfig(name="waterbirds", dataset="waterbirds", erm_recipe="paper-repo"),
        TLDRConfig(name="celeba", dataset="celeba", erm_recipe="paper-repo"),
        TLDRConfig(name="spuco-animals", dataset="spuco-animals", erm_recipe="paper-repo"),
    )
}


#: Fields that are no flag of a command, with the reason. `filter`, `retrain` and `erm`
#: share TLDRConfig; each exposes the fields its workflow reads.
_PRESET_NAME = {"name": "the preset's own name (--preset chooses it)"}
_TOY_SIZE = {"toy_size": "the toy CNN and the tiny CLIP are fitted on 32 px images"}
_HEAD = "the new head is trained by `tldr retrain` only"
_DFR = "DFR is fitted by `tldr retrain` only"
FILTER_NOT_FLAGS = {
    **_PRESET_NAME, **_TOY_SIZE,
    "method": "the filter always fits the projector (--method is retrain's)",
    **{k: _HEAD for k in ("head_lr", "head_weight_decay", "head_batch_size", "head_epochs",
                          "templates", "template_draw")},
    **{k: _DFR for k in ("dfr_c_grid", "dfr_retrains")},
    **{k: "the filter reads the training split only" for k in ("toy_n_val", "toy_n_test")},
}  # fmt: skip
RETRAIN_NOT_FLAGS = {**_PRESET_NAME, **_TOY_SIZE}
ERM_NOT_FLAGS = {
    **_PRESET_NAME, **_TOY_SIZE,
    **{k: _HEAD for k in ("head_lr", "head_weight_decay", "head_batch_size", "head_epochs",
                          "templates", "template_draw")},
    **{k: _DFR for k in ("dfr_c_grid", "dfr_retrains")},
    **{k: "ERM training uses no CLIP, words or projector" for k in (
        "words", "method", "clip_model", "clip_pretrained", "quick_gelu", "clip_input",
        "gap_pairs", "n_gap_pairs", "preprocess_embed", "ridge_lambda")},
    "classifier": "ERM trains the classifier (--init-from starts from saved weights)",
    "toy_n_val": "ERM trains on the training split and reports the test split",
}  # fmt: skip


def needs_projector(cfg: TLDRConfig, command: str) -> bool:
    """Whether `command` fits CLIP's projector (and so reads words and gap pairs): the
    filter always, retrain unless it fits DFR alone."""
    return command == "filter" or (command == "retrain" and cfg.method != "dfr")


# --------------------------------------------------------------------------- generate
LLM, RETRIES = "LLM", "Retries"


def repeated(values: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """A repeatable flag's values (or one value) as a tuple; none given -> None (keep)."""
    if isinstance(values, str):
        values = [values]
    return tuple(values or ()) or None


@dataclass(frozen=True)
class GenerateConfig:
    """Resolved options of `tldr generate` (never holds the API key itself); each field is
    set by the flag of the same name (`per_call` by `--per-call`)."""

    preset: str | None = opt(
        None, "Dataset whose lists are built: waterbirds, celeba, spuco-animals or toy "
        "(classes, spurious values, anchors, LLM descriptions).", flag=("--preset", "-p"),
    )  # fmt: skip
    model: str | None = opt(
        None, "LLM name as the server knows it (gpt-4o-mini, a vLLM/Ollama model, ...); "
        "unset when every list comes from --from-file.", panel=LLM,
    )  # fmt: skip
    base_url: str | None = opt(
        None, "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM) or "
        "http://localhost:11434/v1 (Ollama); default api.openai.com.", panel=LLM,
    )  # fmt: skip
    key_env_var: str = opt(
        "OPENAI_API_KEY", "Environment variable holding the API key. The key is never "
        "written anywhere.", panel=LLM,
    )  # fmt: skip
    temperature: float = opt(1.0, "Sampling temperature sent with every request.", panel=LLM)
    target: int = opt(200, "Words wanted per list (200, as in the official lists).")
    per_call: int = opt(50, "Words asked for per request.", panel=LLM)
    max_calls: int = opt(
        0, "Requests per list before giving up on --target (0: 3 x ceil(target/per-call) "
        "+ 2).", panel=LLM,
    )  # fmt: skip
    patience: int = opt(
        3, "Stop a list after this many calls in a row brought no new word (or no readable "
        "reply).", panel=LLM,
    )  # fmt: skip
    max_tokens: int | None = opt(
        4096, "Reply token limit per request (0: not sent, for models that reject "
        "max_tokens).", panel=LLM,
    )  # fmt: skip
    timeout: float = opt(120.0, "Seconds per HTTP request (the openai client's timeout).",
                         panel=RETRIES)  # fmt: skip
    max_retries: int = opt(
        5, "Retries of a request by the openai client on 408/409/429/5xx, timeouts, dropped "
        "connections and unreadable bodies, with its backoff (0.5 s doubling to 8 s) or the "
        "server's Retry-After up to 120 s.", panel=RETRIES,
    )  # fmt: skip
    prompts: Path | None = opt(None, "JSON/TOML file replacing the prompts (see --dry-run).",
                               panel=LLM)  # fmt: skip
    from_file: tuple[str, ...] = opt(
        (), "Import lists instead of asking the LLM: [LIST=]PATH of a word-list JSON, a "
        "{list: \\[words]} JSON or a one-word-per-line text file; or builtin:toy. "
        "Repeatable; lists not imported are generated with --model.",
        cli_type=list[str], parse=repeated,
    )  # fmt: skip
    show_prompts: bool = opt(False, "Print each prompt as it is sent (stderr).",
                             flag="--show-prompts/--hide-prompts")  # fmt: skip
    offline_toy: bool = opt(
        False, "Use the shipped toy word lists (= --preset toy --from-file builtin:toy).",
        flag="--offline-toy/--no-offline-toy",
    )  # fmt: skip

    def __post_init__(self) -> None:
        checks = [
            (self.target >= 1, f"--target {self.target}: expected at least 1 word per list"),
            (self.per_call >= 1, f"--per-call {self.per_call}: expected at least 1"),
            (self.max_calls >= 0, f"--max-calls {self.max_calls}: expected 0 (auto) or more"),
            (self.patience >= 1, f"--patience {self.patience}: expected at least 1"),
            (0.0 <= self.temperature <= 2.0, f"--temperature {self.temperature}: expected 0..2"),
            (self.timeout > 0, f"--timeout {self.timeout}: expected seconds > 0"),
            (self.max_retries >= 0, f"--max-retries {self.max_retries}: expected 0 or more"),
            (
                self.max_tokens in (None, 0) or self.max_tokens >= 16,
                f"--max-tokens {self.max_tokens}: expected 0 (not sent) or at least 16",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def calls_limit(self) -> int:
        return self.max_calls or 3 * math.ceil(self.target / self.per_call) + 2


def validate_generate(cfg: GenerateConfig) -> None:
    """The words must come from somewhere: an LLM (--model) or files (--from-file).

    Raises:
        ConfigError: neither is given, or --preset names no word-list preset.
    """
    if cfg.model is None and not cfg.from_file and not cfg.offline_toy:
        raise ConfigError(
            "tell tldr generate where the words come from: --model NAME (with "
            "--base-url for vLLM/Ollama) or --from-file PATH, or --offline-toy"
        )
    if cfg.preset is not None:
        get_preset(cfg.preset)


def finish_generate(cfg: GenerateConfig) -> GenerateConfig:
    """`--offline-toy` is `--preset toy --from-file builtin:toy` (the preset given wins)."""
    if not cfg.offline_toy:
        return cfg
    extra = () if "builtin:toy" in cfg.from_file else ("builtin:toy",)
    return replace(cfg, preset=cfg.preset or "toy", from_file=(*cfg.from_file, *extra))


#: Fields of `generate` a resumed run may change besides RUNTIME_KNOBS: they change how
#: the requests are sent or shown (HTTP timeout, the client's retries, printing the
#: prompts), never a request or its cache key.
GENERATE_KNOBS = RUNTIME_KNOBS | {"timeout", "max_retries", "show_prompts"}
