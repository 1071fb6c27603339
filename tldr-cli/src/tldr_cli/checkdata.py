"""`tldr check-data`: check a downloaded dataset (and the other pieces a run names)
without building a model or reading more than file names and metadata.

For each split it loads the metadata with the same loader a run uses
(`labshared.data.group_shift`, which checks the files and fields), then checks that EVERY
listed image file exists (the loaders check only the first) and names the first missing
one, opens the first image, and counts images per (class, spurious) group. Waterbirds and
CelebA counts are shown beside the official split sizes. Optionally it also checks:

- `--gap-pairs`: the COCO captions JSON (or JSONL) parses and every image it names exists;
- `--words`: the word lists name the dataset's classes and spurious values (`labels.py`);
- `--classifier`: the checkpoint loads and has as many outputs as the dataset has classes;
- `--backbone-weights` / `--clip-pretrained` given as local files: they exist (the CLIP
  file is not loaded; open_clip tags and torchvision enum names are downloaded on first
  use and are only reported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from labshared.data.group_shift import SPLITS, GroupShiftSplit
from labshared.errors import ConfigError, DataLayoutError
from tldr_cli.classifier import load_classifier
from tldr_cli.config import TLDRConfig
from tldr_cli.features import load_splits
from tldr_cli.gap import COCO_LAYOUT, list_gap_pairs
from tldr_cli.labels import align_wordlists
from tldr_cli.wordlists import load_wordlists

# Official split sizes (train / val / test): Waterbirds from group_DRO's
# `waterbird_complete95_forest2water2` metadata, CelebA from `list_eval_partition`.
OFFICIAL_SIZES: dict[str, dict[str, int]] = {
    "waterbirds": {"train": 4795, "val": 1199, "test": 5794},
    "celeba": {"train": 162770, "val": 19867, "test": 19962},
}
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _first_missing(paths: list[Path]) -> tuple[Path | None, int]:
    """(first missing file, number missing); stat only, no image is decoded."""
    missing = [p for p in paths if not p.is_file()]
    return (missing[0] if missing else None), len(missing)


def check_split(data: GroupShiftSplit) -> dict[str, Any]:
    """Counts of one loaded split; every listed image file must exist.

    Raises:
        DataLayoutError: naming the first missing or unreadable image.
    """
    if data.paths is not None:
        first, n_missing = _first_missing(data.paths)
        if first is not None:
            raise DataLayoutError(
                first,
                f"image of the {data.split} split is missing ({n_missing} of "
                f"{len(data.paths)} listed files are missing; this is the first)",
            )
    if len(data):
        data.image(0)  # decodes one image: DataLayoutError if it is not an image
    groups = np.bincount(data.group, minlength=data.n_groups).tolist()
    names = [f"{c} / {s}" for c in data.class_names for s in data.spurious_names]  # g = c * S + s
    return {
        "images": len(data),
        "groups": dict(zip(names, groups, strict=True)),
        "official": OFFICIAL_SIZES.get(data.dataset, {}).get(data.split),
    }


def check_gap_pairs(source: str) -> dict[str, Any]:
    """Every image named by the gap pairs exists; counts pairs and distinct images."""
    if source == "toy":
        return {"source": "toy", "pairs": "generated"}
    pairs = list_gap_pairs(source)
    images = sorted({p for p, _ in pairs})
    first, n_missing = _first_missing(images)
    if first is not None:
        raise DataLayoutError(
            first,
            f"image of a gap pair is missing ({n_missing} of {len(images)} images missing; "
            "this is the first)",
            COCO_LAYOUT,
        )
    try:
        with Image.open(images[0]) as im:
            im.convert("RGB")
    except OSError:
        raise DataLayoutError(images[0], "cannot read the image of a gap pair") from None
    return {"source": str(source), "pairs": len(pairs), "images": len(images)}


def _weights_note(flag: str, value: str | None, downloads: str) -> str | None:
    if not value or value.lower() == "none":
        return None
    path = Path(value)
    if path.suffix in _WEIGHT_SUFFIXES or path.exists():
        if not path.is_file():
            raise ConfigError(f"{flag} {value}: file not found")
        return f"{flag} {value}: local file, {path.stat().st_size / 2**20:.1f} MiB"
    return f"{flag} {value}: {downloads}"


def check_data(cfg: TLDRConfig) -> dict[str, Any]:
    """Check every piece a `filter` / `retrain` run with `cfg` would read (module
    docstring): the dataset, and `cfg.gap_pairs`, `cfg.words`, `cfg.classifier` if set.

    Returns:
        {"dataset", "root", "splits": {split: counts}, "gap_pairs", "words", "classifier",
        "weights"}.

    Raises:
        DataLayoutError / ConfigError: the first problem found, naming the file.
    """
    gap_pairs, words, classifier = cfg.gap_pairs, cfg.words, cfg.classifier
    report: dict[str, Any] = {"dataset": cfg.dataset, "root": cfg.data_root, "splits": {}}
    splits = {}
    for split in SPLITS:
        splits[split] = load_splits(cfg, (split,))[split]
        report["splits"][split] = check_split(splits[split])
    train = splits["train"]
    if gap_pairs:
        report["gap_pairs"] = check_gap_pairs(gap_pairs)
    if words is not None:
        wl = align_wordlists(
            load_wordlists(words), train.class_names, train.spurious_names, words, train.dataset
        )
        report["words"] = {
            "file": str(words),
            "labels": {
                str(i): f"{name} ({len(ws)} words)"
                for i, (name, ws) in enumerate(wl.classes.items())
            },
            "spurious": {
                str(i): f"{name} ({len(ws)} words)"
                for i, (name, ws) in enumerate(wl.spurious.items())
            },
        }
    if classifier:
        model, meta = load_classifier(classifier)
        if model.num_classes != train.n_classes:
            raise ConfigError(
                f"--classifier {classifier} has {model.num_classes} outputs; the dataset has "
                f"{train.n_classes} classes"
            )
        report["classifier"] = {
            "path": str(classifier),
            "arch": model.arch,
            "num_classes": model.num_classes,
            "recipe": meta.get("recipe"),
        }
    notes = [
        _weights_note(
            "--backbone-weights",
            cfg.backbone_weights if cfg.arch == "resnet50" and not classifier else None,
            "torchvision downloads it on first use (offline: pass the .pth file)",
        ),
        _weights_note(
            "--clip-pretrained",
            cfg.clip_pretrained if cfg.clip_model != "tiny-clip-toy" else None,
            f"open_clip tag of {cfg.clip_model}, downloaded on first use (offline: pass the file)",
        ),
    ]
    report["weights"] = [n for n in notes if n]
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as plain lines for stdout."""
    lines = [f"dataset {report['dataset']} at {report['root'] or '(in memory)'}"]
    for split, info in report["splits"].items():
        official = info["official"]
        note = ""
        if official is not None:
            note = (
                "  (official size)" if official == info["images"] else f"  (official: {official})"
            )
        lines.append(f"  {split:5s} {info['images']:7d} images{note}")
        lines += [f"        {n:7d}  {g}" for g, n in info["groups"].items()]
    if "gap_pairs" in report:
        g = report["gap_pairs"]
        lines.append(
            f"gap pairs {g['source']}: "
            + (
                "generated toy pairs"
                if g["pairs"] == "generated"
                else f"{g['pairs']} captions of {g['images']} images"
            )
        )
    if "words" in report:
        w = report["words"]
        lines.append(f"word lists {w['file']}: matched by name")
        lines += [f"  label {i}: {v}" for i, v in w["labels"].items()]
        lines += [f"  spurious {i}: {v}" for i, v in w["spurious"].items()]
    if "classifier" in report:
        c = report["classifier"]
        lines.append(
            f"classifier {c['path']}: {c['arch']}, {c['num_classes']} classes"
            + (f", recipe {c['recipe']}" if c["recipe"] else "")
        )
    lines += report["weights"]
    lines.append("OK: every file listed is present")
    return "\n".join(lines)
