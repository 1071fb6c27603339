"""CelebA in its official layout (the release, WILDS `celebA_v1.0` or the Kaggle CSVs).

`list_attr_celeba.csv` or `.txt`, `list_eval_partition.csv` or `.txt`, and
`img_align_celeba/`; label Blond_Hair, spurious Male, both mapped -1/1 -> 0/1 as WILDS
does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from labshared.cache import fingerprint_files
from labshared.data.group_shift.records import (
    SPLIT_CODE,
    GroupShiftSplit,
    check_split,
    int_column,
    read_csv,
)
from labshared.errors import DataLayoutError

CELEBA_LAYOUT = """\
<root>/                          (the official release, WILDS celebA_v1.0 or Kaggle)
  list_attr_celeba.csv           image_id,5_o_Clock_Shadow,...,Blond_Hair,...,Male,...  (-1/1)
    or list_attr_celeba.txt      line 1: count; line 2: the 40 names; then '<file> -1 1 ...'
  list_eval_partition.csv        image_id,partition  (0 train, 1 val, 2 test)
    or list_eval_partition.txt   '<file> <partition>'
  img_align_celeba/              000001.jpg ... (or img_align_celeba/img_align_celeba/)"""


def _celeba_csv(csv: Path) -> Any:
    """An official-style CelebA CSV (attributes or partition) indexed by `image_id`."""
    df = read_csv(csv, CELEBA_LAYOUT)
    if "image_id" not in df.columns:
        raise DataLayoutError(csv, "field 'image_id' missing", CELEBA_LAYOUT)
    return df.set_index("image_id")


def _celeba_attrs(root: Path) -> tuple[Any, Path]:
    # pandas takes ~0.3 s to import and only the file-based loaders need it (start-up time).
    import pandas as pd

    csv, txt = root / "list_attr_celeba.csv", root / "list_attr_celeba.txt"
    if csv.is_file():
        return _celeba_csv(csv), csv
    if txt.is_file():
        try:
            lines = txt.read_text().splitlines()
            names = lines[1].split()
            rows = [line.split() for line in lines[2:] if line.strip()]
        except (IndexError, UnicodeDecodeError):
            raise DataLayoutError(
                txt, "expected a count line, a names line, then rows", CELEBA_LAYOUT
            ) from None
        for i, r in enumerate(rows):
            if len(r) != len(names) + 1:
                raise DataLayoutError(
                    txt,
                    f"row {i + 3} has {len(r) - 1} values for {len(names)} attributes",
                    CELEBA_LAYOUT,
                )
        df = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=names)
        return df, txt
    raise DataLayoutError(csv, "attribute file not found (nor list_attr_celeba.txt)", CELEBA_LAYOUT)


def _celeba_partition(root: Path) -> tuple[Any, Path]:
    csv, txt = root / "list_eval_partition.csv", root / "list_eval_partition.txt"
    if csv.is_file():
        return _celeba_csv(csv), csv
    if txt.is_file():
        df = read_csv(txt, CELEBA_LAYOUT, sep=r"\s+", header=None, names=["image_id", "partition"])
        return df.set_index("image_id"), txt
    raise DataLayoutError(
        csv, "partition file not found (nor list_eval_partition.txt)", CELEBA_LAYOUT
    )


def load_celeba(
    root: str | Path, split: str, target: str = "Blond_Hair", confounder: str = "Male"
) -> GroupShiftSplit:
    """CelebA from the official attribute/partition files (see module docstring).

    Args:
        target: the attribute that is the label (-1/1 -> 0/1).
        confounder: the attribute that is the spurious one.

    Raises:
        DataLayoutError: a file, a column, an attribute row or the image folder is missing.
    """
    check_split(split)
    root = Path(root)
    attrs, attr_path = _celeba_attrs(root)
    part, part_path = _celeba_partition(root)
    partition = int_column(part, "partition", part_path, (0, 1, 2), CELEBA_LAYOUT)
    in_split = part.index[partition == SPLIT_CODE[split]]
    ids = in_split.to_numpy()
    # a hashed look-up (np.setdiff1d on these string arrays took 24 s for 20,000 names)
    missing = ids[~in_split.isin(attrs.index)]
    if missing.size:
        raise DataLayoutError(
            attr_path,
            f"no attribute row for {missing.size} image(s), e.g. {missing[0]!r}",
            CELEBA_LAYOUT,
        )
    sub = attrs.loc[ids]
    y = (int_column(sub, target, attr_path, (-1, 0, 1), CELEBA_LAYOUT) > 0).astype(np.int64)
    a = (int_column(sub, confounder, attr_path, (-1, 0, 1), CELEBA_LAYOUT) > 0).astype(np.int64)
    img_dir = root / "img_align_celeba"
    if (img_dir / "img_align_celeba").is_dir():  # the Kaggle zip nests the folder
        img_dir = img_dir / "img_align_celeba"
    if not img_dir.is_dir():
        raise DataLayoutError(img_dir, "image folder not found", CELEBA_LAYOUT)
    names = [str(i) for i in ids]
    rel_dir = img_dir.relative_to(root).as_posix()
    # the two annotation files and every image of the split: a rewritten image is a miss
    files = [attr_path.name, part_path.name, *(f"{rel_dir}/{name}" for name in names)]
    return GroupShiftSplit(
        dataset="celeba",
        split=split,
        label=y,
        spurious=a,
        n_classes=2,
        n_spurious=2,
        class_names=("non-blond", "blond"),
        spurious_names=("female", "male"),
        paths=[img_dir / name for name in names],
        fingerprint={
            "dataset": "celeba",
            "split": split,
            "target": target,
            "confounder": confounder,
            "root": str(root.resolve()),
            "files": fingerprint_files(root, files),
        },
    )
