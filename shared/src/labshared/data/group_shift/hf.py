"""Hugging Face copies of Waterbirds and CelebA (`datasets.load_dataset`, offline-safe, or
a `save_to_disk` folder).

Known copies: `grodino/waterbirds` (= `salman53/waterbirds`), `pietrolesci/celeba-wilds`,
`tpremoli/CelebA-attrs`, `flwrlabs/celeba`. None is the exact WILDS file set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labshared.cache import fingerprint_files
from labshared.data.group_shift.records import GroupShiftSplit, check_split
from labshared.errors import DataLayoutError

HF_LAYOUT = """\
a Hugging Face dataset (hub id in the local cache, or a save_to_disk folder) with
  an image column (Image feature, or 'image'/'img'),
  a label column ('label', 'y' or 'Blond_Hair'), a spurious column ('place', 'Male', 'a'),
  and splits train / validation (or val, valid) / test"""


@dataclass(frozen=True)
class HFCopy:
    """A known Hugging Face copy: hub id, config, and what its columns mean."""

    source: str
    kind: str  # "waterbirds" or "celeba": fixes class and spurious names
    config: str | None = None
    label: str | None = None
    spurious: str | None = None


HF_COPIES: dict[str, HFCopy] = {
    c.source: c
    for c in (
        HFCopy("grodino/waterbirds", "waterbirds", label="label", spurious="place"),
        HFCopy("salman53/waterbirds", "waterbirds", label="label", spurious="place"),
        HFCopy("pietrolesci/celeba-wilds", "celeba", label="Blond_Hair", spurious="Male"),
        HFCopy("tpremoli/CelebA-attrs", "celeba", label="Blond_Hair", spurious="Male"),
        HFCopy("flwrlabs/celeba", "celeba", "img_align+identity+attr", "Blond_Hair", "Male"),
    )
}
_HF_SPLITS = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}
_HF_NAMES = {
    "waterbirds": (("landbird", "waterbird"), ("land", "water")),
    "celeba": (("non-blond", "blond"), ("female", "male")),
}


def _hf_open(source: str, config: str | None) -> Any:
    # `datasets` takes ~1 s to import and only the Hugging Face copies need it (start-up time).
    import datasets

    if Path(source).is_dir():
        try:
            return datasets.load_from_disk(source)
        except (FileNotFoundError, ValueError) as exc:
            raise DataLayoutError(
                source, f"not a datasets save_to_disk folder ({exc})", HF_LAYOUT
            ) from None
    try:
        return datasets.load_dataset(source, config)
    except Exception as exc:  # offline and not cached, unknown id, ...: one clear line
        offline = (
            os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        )
        hint = (
            " (offline mode: the dataset must already be in the local Hugging Face cache, "
            "or pass a save_to_disk folder)"
            if offline
            else ""
        )
        raise DataLayoutError(
            source, f"cannot load the Hugging Face dataset: {exc}{hint}", HF_LAYOUT
        ) from None


def _hf_split(dd: Any, split: str, source: str) -> Any:
    """The Dataset of `split` in a DatasetDict (or the Dataset itself)."""
    if not hasattr(dd, "keys"):
        return dd
    names = [s for s in _HF_SPLITS[split] if s in dd]
    if not names:
        raise DataLayoutError(source, f"no split for {split!r} (has {list(dd.keys())})", HF_LAYOUT)
    return dd[names[0]]


def _hf_column(
    ds: Any, wanted: str | None, candidates: Sequence[str], what: str, source: str
) -> str:
    cols = ds.column_names
    for c in [wanted] if wanted else list(candidates):
        if c in cols:
            return c
    raise DataLayoutError(
        source,
        f"no {what} column (wanted {wanted or ' or '.join(candidates)}; columns: {cols})",
        HF_LAYOUT,
    )


def _hf_image_column(ds: Any, source: str) -> str:
    """The first column with the `datasets.Image` feature, else 'image' or 'img'."""
    # `datasets` is already imported by `_hf_open` (the import is a lookup here); kept out
    # of the module top for start-up time.
    import datasets

    image_cols = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    return image_cols[0] if image_cols else _hf_column(ds, None, ("image", "img"), "image", source)


def _to_binary(values: Any, column: str, source: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    arr = arr.astype(np.int64)
    if not np.isin(arr, (-1, 0, 1)).all():
        raise DataLayoutError(
            source, f"column '{column}' holds values other than -1/0/1", HF_LAYOUT
        )
    return (arr > 0).astype(np.int64)


def _local_files(source: str) -> dict[str, Any]:
    """A `save_to_disk` folder's root and `fingerprint_files` of every file in it (its
    stored `datasets` fingerprint survives an edit of the Arrow files); {} for a hub id."""
    if not Path(source).is_dir():
        return {}
    return {"root": str(Path(source).resolve()), "files": fingerprint_files(source)}


def load_hf_group_shift(
    source: str,
    split: str,
    kind: str | None = None,
    label_column: str | None = None,
    spurious_column: str | None = None,
    config: str | None = None,
) -> GroupShiftSplit:
    """A Hugging Face copy of Waterbirds or CelebA (hub id or `save_to_disk` folder).

    Known hub ids (`HF_COPIES`) bring their columns; otherwise the columns are guessed
    (label: label / y / Blond_Hair; spurious: place / Male / a) or given explicitly.

    Raises:
        DataLayoutError: the dataset cannot be loaded, lacks the split or a column, or a
            label/spurious column holds values other than -1/0/1 (or booleans).
    """
    check_split(split)
    known = HF_COPIES.get(source)
    kind = kind or (known.kind if known else None)
    dd = _hf_open(source, config or (known.config if known else None))
    ds = _hf_split(dd, split, source)
    image_col = _hf_image_column(ds, source)
    y_col = _hf_column(
        ds,
        label_column or (known.label if known else None),
        ("label", "y", "Blond_Hair"),
        "label",
        source,
    )
    a_col = _hf_column(
        ds,
        spurious_column or (known.spurious if known else None),
        ("place", "Male", "a"),
        "spurious",
        source,
    )
    y = _to_binary(ds[y_col], y_col, source)
    a = _to_binary(ds[a_col], a_col, source)
    if kind is None:
        kind = "celeba" if y_col == "Blond_Hair" else "waterbirds"
    class_names, spurious_names = _HF_NAMES.get(kind, (("0", "1"), ("0", "1")))
    return GroupShiftSplit(
        dataset=f"hf:{source}",
        split=split,
        label=y,
        spurious=a,
        n_classes=2,
        n_spurious=2,
        class_names=class_names,
        spurious_names=spurious_names,
        hf_images=ds.select_columns([image_col]),
        fingerprint={
            "dataset": f"hf:{source}",
            "split": split,
            "hf_fingerprint": ds._fingerprint,
            **_local_files(source),
            "label": y_col,
            "spurious": a_col,
        },
    )
