"""SpuCoAnimals in SpuCo's folder layout (`spuco_birds.py` / `spuco_dogs.py` /
`spuco_animals.py`).

`spuco_birds/<split>/{landbirds,waterbirds}/{land,water}/*` and
`spuco_dogs/<split>/{small_dogs,big_dogs}/{indoor,outdoor}/*`; labels 0..3 (landbird,
waterbird, small dog, big dog), spurious 0..3 (land, water, indoor, outdoor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labshared.cache import fingerprint_files
from labshared.data.group_shift.records import GroupShiftSplit, check_split
from labshared.errors import DataLayoutError

SPUCO_ANIMALS_LAYOUT = """\
<root>/
  spuco_birds/<split>/landbirds/land/*.jpg     label 0, spurious 0
  spuco_birds/<split>/landbirds/water/*.jpg    label 0, spurious 1
  spuco_birds/<split>/waterbirds/land/*.jpg    label 1, spurious 0
  spuco_birds/<split>/waterbirds/water/*.jpg   label 1, spurious 1
  spuco_dogs/<split>/small_dogs/indoor/*.jpg   label 2, spurious 2
  spuco_dogs/<split>/small_dogs/outdoor/*.jpg  label 2, spurious 3
  spuco_dogs/<split>/big_dogs/indoor/*.jpg     label 3, spurious 2
  spuco_dogs/<split>/big_dogs/outdoor/*.jpg    label 3, spurious 3
  (<split> is train, val or test)"""

_SPUCO_FOLDERS = (  # (subset, class folder, spurious folder, label, spurious)
    ("spuco_birds", "landbirds", "land", 0, 0),
    ("spuco_birds", "landbirds", "water", 0, 1),
    ("spuco_birds", "waterbirds", "land", 1, 0),
    ("spuco_birds", "waterbirds", "water", 1, 1),
    ("spuco_dogs", "small_dogs", "indoor", 2, 2),
    ("spuco_dogs", "small_dogs", "outdoor", 2, 3),
    ("spuco_dogs", "big_dogs", "indoor", 3, 2),
    ("spuco_dogs", "big_dogs", "outdoor", 3, 3),
)


def load_spuco_animals(root: str | Path, split: str) -> GroupShiftSplit:
    """SpuCoAnimals in SpuCo's folder layout (see module docstring).

    Raises:
        DataLayoutError: a group folder is missing or holds no images.
    """
    check_split(split)
    root = Path(root)
    paths: list[Path] = []
    labels: list[int] = []
    spurious: list[int] = []
    for subset, cls, place, y, a in _SPUCO_FOLDERS:
        folder = root / subset / split / cls / place
        if not folder.is_dir():
            raise DataLayoutError(folder, "folder not found", SPUCO_ANIMALS_LAYOUT)
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataLayoutError(folder, "folder holds no images", SPUCO_ANIMALS_LAYOUT)
        paths += files
        labels += [y] * len(files)
        spurious += [a] * len(files)
    return GroupShiftSplit(
        dataset="spuco-animals",
        split=split,
        label=np.array(labels, dtype=np.int64),
        spurious=np.array(spurious, dtype=np.int64),
        n_classes=4,
        n_spurious=4,
        class_names=("landbird", "waterbird", "small dog", "big dog"),
        spurious_names=("land", "water", "indoor", "outdoor"),
        paths=paths,
        fingerprint={
            "dataset": "spuco-animals",
            "split": split,
            "root": str(root.resolve()),
            "files": fingerprint_files(root, paths),
        },
    )
