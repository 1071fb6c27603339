"""Run presets for `tldr erm`, `tldr filter` and `tldr retrain` (frozen dataclasses).

Precedence: dataclass defaults < preset < flags actually passed (`labshared.config.resolve`:
options default to None, meaning "keep the preset"). Every flag of those commands has the
name of the field it sets (`--erm-recipe` <-> `erm_recipe`, `--head-lr` <-> `head_lr`).
`validate_inputs` checks what a config names on disk before a run folder is made. The `waterbirds`
and `celeba` presets carry the paper repo's settings (`TLDR:script.sh`): lambda 50, AdamW
lr 1e-4, wd 1e-4, batch 128, 1 epoch, ViT-B/32 OpenAI CLIP, ResNet-50 ImageNet weights,
1000 COCO-2014-val caption pairs for the gap, DFR's C grid and 20 retrains. `toy` is the
offline world (tiny CLIP, toy CNN) sized to run in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labshared.config import unknown_name
from labshared.data.group_shift import GROUP_SHIFT_DATASETS
from labshared.errors import ConfigError
from tldr_cli.classifier import CLASSIFIER_FORMAT, check_backbone_weights, load_classifier
from tldr_cli.dfr import C_GRID
from tldr_cli.wordlists import load_wordlists


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


ERM_RECIPES: dict[str, ErmRecipe] = {
    r.name: r
    for r in (
        ErmRecipe("paper-repo", epochs=1, lr=1e-4, weight_decay=1e-2, batch_size=32),
        ErmRecipe(
            "dfr-waterbirds",
            epochs=100,
            lr=1e-3,
            weight_decay=1e-3,
            batch_size=32,
            augment=True,
            preprocess="dfr",
        ),
        # DFR trains AND evaluates CelebA on the full image (its Waterbirds transforms),
        # not on TLDR's centre crop 178: train and evaluation views must agree.
        ErmRecipe(
            "dfr-celeba",
            epochs=50,
            lr=1e-3,
            weight_decay=1e-4,
            batch_size=128,
            augment=True,
            preprocess="dfr",
        ),
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
PREPROCESSES = ("dataset", "dfr")
# Precision of the frozen forward passes (classifier features, CLIP image embeddings).
# "runtime" follows --precision (bf16 autocast on recent GPUs); the others are explicit.
FEATURE_PRECISIONS = ("fp32", "bf16", "fp16", "runtime")


@dataclass(frozen=True)
class TLDRConfig:
    """Every setting of a filter / retrain / erm run.

    Attributes (each set by the flag of the same name: `erm_recipe` by `--erm-recipe`):
        words: word-list JSON, the input of `filter` and of `retrain` with TLDR.
        classifier: a trained classifier (`tldr erm` run folder, checkpoint folder or
            ResNet-50 state dict); None: ERM is trained with `erm_recipe` (cached).
        method: what `retrain` fits: tldr, dfr or both.
        dataset: toy, waterbirds, celeba, spuco-animals or hf.
        data_root: dataset folder or HF id / save_to_disk folder.
        arch: classifier architecture, resnet50 or toy-cnn.
        backbone_weights: ImageNet initialisation of ERM: a torchvision weights enum name
            (IMAGENET1K_V1, downloads once), a local .pth/.safetensors file, or none.
        erm_recipe: key of ERM_RECIPES.
        clip_model, clip_pretrained: open_clip name and tag or file.
        quick_gelu: QuickGELU for a local CLIP file (`--quick-gelu on|off`); None: from
            the weights (`labshared.clip`).
        clip_input: "clip" (CLIP sees its own preprocessing; default) or "classifier"
            (the official quirk: CLIP sees the classifier's ImageNet-normalised pixels).
        gap_pairs: "toy" or a COCO-captions folder or a JSONL file.
        n_gap_pairs: caption pairs used for the mean gap (1000 in the paper repo).
        preprocess_embed: "none" (raw CLIP embeddings, `script.sh`) or "clip_normalize"
            (the official option: image embeddings, gap and word embeddings L2-normalised
            before the projector).
        ridge_lambda: ridge penalty lambda of the projector.
        head_lr, head_weight_decay, head_batch_size, head_epochs: the new last layer.
        templates: the caption templates each word pair is embedded in: "imagenet" (the 80
            OpenAI ImageNet templates, as the paper) or "toy" (the caption forms the tiny
            CLIP was fitted on; `textdata.TOY_TEMPLATES`).
        template_draw: "all" (uniform over the templates) or "official" (randint(0, T-1):
            the last template is never drawn).
        dfr_c_grid, dfr_retrains: the DFR baseline.
        toy_*: sizes, train correlation and data seed of the toy world (`toy_seed` draws
            the spurious split: which digits, colours and crops).
        feature_batch_size, num_workers: frozen-feature extraction.
        feature_precision: autocast of the frozen forward passes (classifier features, CLIP
            image embeddings): fp32 (default; TLDR and DFR extract
            classifier features in fp32 and open_clip runs CLIP in fp32), bf16, fp16 (CUDA
            only) or runtime (follow --precision, bf16 on recent GPUs). Part of the
            feature cache keys.
    """

    name: str
    dataset: str
    words: Path | None = None
    classifier: str | None = None
    method: str = "both"
    data_root: str | None = None
    arch: str = "resnet50"
    backbone_weights: str | None = "IMAGENET1K_V1"
    erm_recipe: str = "paper-repo"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    quick_gelu: bool | None = None
    clip_input: str = "clip"
    gap_pairs: str | None = None
    n_gap_pairs: int = 1000
    preprocess_embed: str = "none"
    ridge_lambda: float = 50.0
    head_lr: float = 1e-4
    head_weight_decay: float = 1e-4
    head_batch_size: int = 128
    head_epochs: int = 1
    templates: str = "imagenet"
    template_draw: str = "all"
    dfr_c_grid: tuple[float, ...] = C_GRID
    dfr_retrains: int = 20
    toy_n_train: int = 2000
    toy_n_val: int = 400
    toy_n_test: int = 800
    toy_corr: float = 0.95
    toy_size: int = 32
    toy_seed: int = 0
    feature_batch_size: int = 256
    num_workers: int = 4
    feature_precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.dataset not in GROUP_SHIFT_DATASETS:
            raise unknown_name("--dataset", self.dataset, GROUP_SHIFT_DATASETS)
        if self.erm_recipe not in ERM_RECIPES:
            raise unknown_name("--erm-recipe", self.erm_recipe, ERM_RECIPES)
        checks = [
            (self.method in METHODS, f"--method {self.method!r}: expected tldr, dfr or both"),
            (
                self.preprocess_embed in PREPROCESS_EMBEDS,
                f"--preprocess-embed {self.preprocess_embed!r}: expected one of "
                f"{', '.join(PREPROCESS_EMBEDS)}",
            ),
            (
                self.templates in TEMPLATE_SETS,
                f"--templates {self.templates!r}: expected one of {', '.join(TEMPLATE_SETS)}",
            ),
            (
                self.template_draw in TEMPLATE_DRAWS,
                f"--template-draw {self.template_draw!r}: expected all or official",
            ),
            (
                self.feature_precision in FEATURE_PRECISIONS,
                f"--feature-precision {self.feature_precision!r}: expected one of "
                f"{', '.join(FEATURE_PRECISIONS)}",
            ),
            (
                self.clip_input in CLIP_INPUTS,
                f"--clip-input {self.clip_input!r}: expected clip or classifier",
            ),
            (
                self.arch in ("resnet50", "toy-cnn"),
                f"--arch {self.arch!r}: expected resnet50 or toy-cnn",
            ),
            (self.ridge_lambda > 0, f"--ridge-lambda {self.ridge_lambda}: expected > 0"),
            (self.head_epochs >= 1, f"--head-epochs {self.head_epochs}: expected >= 1"),
            (self.head_lr > 0, f"--head-lr {self.head_lr}: expected > 0"),
            (self.head_batch_size >= 1, f"--head-batch-size {self.head_batch_size}: expected >= 1"),
            (self.n_gap_pairs >= 1, f"--n-gap-pairs {self.n_gap_pairs}: expected >= 1"),
            (self.dfr_retrains >= 1, f"--dfr-retrains {self.dfr_retrains}: expected >= 1"),
            (0.0 <= self.toy_corr <= 1.0, f"--toy-corr {self.toy_corr}: expected a probability"),
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


def needs_projector(cfg: TLDRConfig, command: str) -> bool:
    """Whether `command` fits CLIP's projector (and so reads words and gap pairs): the
    filter always, retrain unless it fits DFR alone."""
    return command == "filter" or (command == "retrain" and cfg.method != "dfr")


def validate_inputs(cfg: TLDRConfig, command: str) -> None:
    """What a `filter` / `retrain` / `erm` run reads must be there before its run folder is
    made, the cheap checks first: the dataset folder, the classifier file, the word lists
    (parsed; for retrain none empty), the gap pairs; then the weights (the classifier
    loaded, CLIP's and ERM's ImageNet weights in the cache or downloadable now).

    Raises:
        ConfigError / DataLayoutError: naming the flag, the file and what was expected.
    """
    if cfg.dataset != "toy":
        if cfg.data_root is None:
            raise ConfigError(
                f"--dataset {cfg.dataset} needs --data-root; expected layout:\n"
                f"{GROUP_SHIFT_DATASETS[cfg.dataset]}"
            )
        if cfg.dataset != "hf" and not Path(cfg.data_root).is_dir():
            raise ConfigError(
                f"--data-root {cfg.data_root}: folder not found; expected the {cfg.dataset} "
                f"layout:\n{GROUP_SHIFT_DATASETS[cfg.dataset]}"
            )
    if command != "erm":
        if cfg.classifier is not None and not Path(cfg.classifier).exists():
            raise ConfigError(
                f"--classifier {cfg.classifier}: does not exist; expected {CLASSIFIER_FORMAT}"
            )
        if needs_projector(cfg, command):
            _check_projector_inputs(cfg, command)
    _check_weights(cfg, command)


def _check_projector_inputs(cfg: TLDRConfig, command: str) -> None:
    if cfg.words is None:
        raise ConfigError(
            f"--method {cfg.method} needs --words (the JSON written by `tldr filter` or "
            "`tldr generate`)"
        )
    _check_words(cfg, command)
    if not cfg.gap_pairs:
        raise ConfigError("--gap-pairs is required: a COCO captions folder, a JSONL file, or 'toy'")
    if cfg.gap_pairs != "toy" and not Path(cfg.gap_pairs).exists():
        raise ConfigError(
            f"--gap-pairs {cfg.gap_pairs}: not found; expected a COCO captions folder, a "
            "JSONL file of image-caption pairs, or 'toy'"
        )


def _check_weights(cfg: TLDRConfig, command: str) -> None:
    """The weights the run loads: a corrupt `--classifier` or missing CLIP / ImageNet
    weights (offline) is refused here, in seconds, before the run folder exists."""
    if cfg.arch == "resnet50" and (command == "erm" or cfg.classifier is None):
        check_backbone_weights(cfg.backbone_weights)  # ERM training starts from them
    if command == "erm":
        return
    if cfg.classifier is not None:
        load_classifier(cfg.classifier)  # a ResNet-50 in about a second; loaded again later
    if needs_projector(cfg, command) and cfg.clip_model != "tiny-clip-toy":
        # open_clip loads only when a command runs, so `tldr --help` stays fast
        from labshared.clip_weights import fetch_weights

        fetch_weights(cfg.clip_model, cfg.clip_pretrained,
                      option_names=("--clip-model", "--clip-pretrained"))  # fmt: skip


def _check_words(cfg: TLDRConfig, command: str) -> None:
    """The word lists parse; the new head of `retrain` needs words in every list."""
    wl = load_wordlists(cfg.words)
    if command != "retrain":
        return
    empty = [
        f"{kind}.{name}"
        for kind, lists in (("classes", wl.classes), ("spurious", wl.spurious))
        for name, words in lists.items()
        if not words
    ]
    if empty:
        raise ConfigError(
            f"--words {cfg.words}: lists {empty} are empty (the filter removed every word?)"
        )
