"""ImageNet-100: an ImageFolder root (`train/`, and `val/` or `test/`) restricted to the
100 WNIDs of the official generation script (`labshared/resources/imagenet100_wnids.txt`,
copied verbatim from `joshua840/RobustAGA` `scripts/imagenet100_generation.sh`). Labels are
the WNIDs' positions in sorted order, as torchvision's ImageFolder numbers them.
Deviation: the official script copies the evaluation images to `test/` while its
DataModule reads `val/`; both are accepted here."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path

from torch.utils.data import Dataset

from labshared.data.image_classification.records import FileListDataset, folder_fingerprint
from labshared.errors import DataLayoutError

IMAGENET100_LAYOUT = """\
<root>/
  train/
    n01440764/  *.JPEG       one folder per WNID of the 100-class list
    ...
  val/   (or test/, as the official generation script writes it)
    n01440764/  *.JPEG
    ..."""


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")


@cache
def imagenet100_wnids() -> tuple[str, ...]:
    """The 100 WNIDs in the official script's order (labels use their sorted order)."""
    text = resources.files("labshared").joinpath("resources/imagenet100_wnids.txt").read_text()
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(wnids) == 100 == len(set(wnids)), "imagenet100_wnids.txt must list 100 WNIDs"
    return wnids


def load_imagenet100(
    root: Path, split: str, transform: Callable | None, allow_missing: bool, list_files=True
) -> Dataset | None:
    """The split's images; with `list_files` False, only its folders are checked (the
    directory listing of ~130,000 files is left to the real load) and None returned."""
    if not root.is_dir():
        raise DataLayoutError(root, "missing", IMAGENET100_LAYOUT)
    candidates = ["train"] if split == "train" else ["val", "test"]
    split_dir = next((root / c for c in candidates if (root / c).is_dir()), None)
    if split_dir is None:
        raise DataLayoutError(
            root / candidates[0],
            f"missing (looked for {' or '.join(candidates)}/)",
            IMAGENET100_LAYOUT,
        )
    classes = sorted(imagenet100_wnids())
    missing = [w for w in classes if not (split_dir / w).is_dir()]
    if missing and (not allow_missing or len(missing) == len(classes)):
        raise DataLayoutError(
            split_dir,
            f"{len(missing)} of the 100 ImageNet-100 class folders are missing "
            f"(first: {', '.join(missing[:3])})",
            IMAGENET100_LAYOUT,
        )
    if not list_files:
        return None
    samples: list[tuple[Path, int]] = []
    for label, wnid in enumerate(classes):
        folder = split_dir / wnid
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise DataLayoutError(folder, "class folder holds no images", IMAGENET100_LAYOUT)
        samples.extend((p, label) for p in files)
    dataset = FileListDataset(samples, transform)
    dataset.fingerprint = folder_fingerprint(root, [p for p, _ in samples])
    return dataset
