"""What a `filter` / `retrain` / `erm` run reads must be there before its run folder is
made (each workflow's `check` calls `validate_inputs`): the dataset folder, the classifier,
the word lists, the gap pairs, then the weights."""

from __future__ import annotations

from pathlib import Path

from labshared.data.group_shift import GROUP_SHIFT_DATASETS
from labshared.errors import ConfigError
from tldr_cli.classifier import CLASSIFIER_FORMAT, check_backbone_weights, load_classifier
from tldr_cli.config import TLDRConfig, needs_projector
from tldr_cli.labels import check_words_match_dataset
from tldr_cli.wordlists import load_wordlists


def check_run(cfg: TLDRConfig, command: str) -> None:
    """Everything a `filter` / `retrain` / `erm` run reads, validated before its run folder
    exists: the inputs on disk, then the word lists against the dataset's classes."""
    validate_inputs(cfg, command)
    check_words_match_dataset(cfg, command)


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
        needs = "tldr filter" if command == "filter" else f"--method {cfg.method}"
        raise ConfigError(
            f"{needs} needs --words (the JSON written by `tldr filter` or `tldr generate`)"
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
