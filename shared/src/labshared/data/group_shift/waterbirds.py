"""Waterbirds in its official layout (`metadata.csv`).

The layout is `waterbird_complete95_forest2water2` (group_DRO's
`dataset_scripts/generate_waterbirds.py`), also WILDS `waterbirds_v1.0`: `metadata.csv`
with img_id, img_filename, y, split (0/1/2 = train/val/test), place, place_filename;
label y (landbird 0 / waterbird 1), spurious place (land 0 / water 1).
"""

from __future__ import annotations

from pathlib import Path

from labshared.cache import fingerprint_files
from labshared.data.group_shift.records import (
    SPLIT_CODE,
    GroupShiftSplit,
    check_split,
    int_column,
    read_csv,
)
from labshared.errors import DataLayoutError

WATERBIRDS_LAYOUT = """\
<root>/                          (waterbird_complete95_forest2water2 or waterbirds_v1.0)
  metadata.csv                   img_id,img_filename,y,split,place,place_filename
                                 y: 0 landbird / 1 waterbird; split: 0 train, 1 val, 2 test;
                                 place: 0 land / 1 water
  001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg   (img_filename, relative)
  ..."""


def load_waterbirds(root: str | Path, split: str) -> GroupShiftSplit:
    """Waterbirds from `metadata.csv` (see module docstring).

    Raises:
        DataLayoutError: `metadata.csv` missing or malformed, or its first image absent.
    """
    check_split(split)
    root = Path(root)
    meta_path = root / "metadata.csv"
    df = read_csv(meta_path, WATERBIRDS_LAYOUT)
    if "img_filename" not in df.columns:
        raise DataLayoutError(meta_path, "field 'img_filename' missing", WATERBIRDS_LAYOUT)
    y = int_column(df, "y", meta_path, (0, 1), WATERBIRDS_LAYOUT)
    splits = int_column(df, "split", meta_path, (0, 1, 2), WATERBIRDS_LAYOUT)
    place = int_column(df, "place", meta_path, (0, 1), WATERBIRDS_LAYOUT)
    keep = splits == SPLIT_CODE[split]
    files = [str(f) for f in df["img_filename"].to_numpy()[keep]]
    paths = [root / f for f in files]
    if paths and not paths[0].is_file():
        raise DataLayoutError(paths[0], "image listed in metadata.csv not found", WATERBIRDS_LAYOUT)
    return GroupShiftSplit(
        dataset="waterbirds",
        split=split,
        label=y[keep],
        spurious=place[keep],
        n_classes=2,
        n_spurious=2,
        class_names=("landbird", "waterbird"),
        spurious_names=("land", "water"),
        paths=paths,
        fingerprint={
            "dataset": "waterbirds",
            "split": split,
            "root": str(root.resolve()),
            # metadata.csv and every image of the split: a rewritten image is a cache miss
            "files": fingerprint_files(root, ["metadata.csv", *files]),
        },
    )
