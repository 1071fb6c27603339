"""`robattr train --check-data`: check a downloaded dataset's layout without training.

Builds both splits exactly as training and evaluation will (`build_dataset`), which
loads the index: for CIFAR-10 it reads and validates every official batch file (shapes,
labels); for ImageNet-100 it lists the 100 class folders of `train/` and `val/` (or
`test/`). It then counts the images per split and per class and decodes the first image
of every class, so a missing folder, an empty class or an unreadable file is named before
hours of training. Seconds for CIFAR-10; for ImageNet-100 the directory listing of
~130,000 files plus 200 decodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labshared.data.image_classification import build_dataset, get_dataset_info
from labshared.data.image_classification.records import FileListDataset
from labshared.errors import DataLayoutError
from robattr_cli.config import TrainConfig


def check_data(cfg: TrainConfig) -> dict[str, Any]:
    """Counts per split and class, after decoding one image per class.

    Returns:
        {"dataset", "data_root", "splits": {split: {"images", "classes",
        "images_per_class_min", "images_per_class_max", "decoded"}}}.

    Raises:
        ConfigError: the dataset needs a --data-root and none was given.
        DataLayoutError: a file or folder is missing or unreadable (named in the message).
    """
    info = get_dataset_info(cfg.dataset)
    splits: dict[str, Any] = {}
    for split in ("train", "test"):
        dataset = build_dataset(
            cfg.dataset, cfg.data_root, split, train_transform=False, data_seed=cfg.toy_seed
        )
        labels = np.asarray(dataset.labels)
        counts = np.bincount(labels, minlength=info.num_classes)
        present = np.flatnonzero(counts)
        first_of_class = [int(np.flatnonzero(labels == c)[0]) for c in present]
        for i in first_of_class:
            _decode(dataset, i, info.layout)
        splits[split] = {
            "images": int(len(dataset)),
            "classes": int(len(present)),
            "images_per_class_min": int(counts[present].min()) if len(present) else 0,
            "images_per_class_max": int(counts.max()) if len(present) else 0,
            "decoded": len(first_of_class),
        }
    return {"dataset": cfg.dataset, "data_root": cfg.data_root, "splits": splits}


def _decode(dataset, index: int, layout: str) -> None:
    """Load example `index` through the dataset's transform; a file that does not decode
    becomes a DataLayoutError naming it."""
    try:
        dataset[index]
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError is OSError
        path = dataset.samples[index][0] if isinstance(dataset, FileListDataset) else index
        raise DataLayoutError(path, f"not a readable image ({exc})", layout) from None
