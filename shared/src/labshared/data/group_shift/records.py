"""What every group-shift loader returns (`GroupShiftSplit`), and the readers they share.

`GroupShiftSplit` holds the images (file paths, an in-memory uint8 tensor or a Hugging Face
image column), the class `label`, the `spurious` attribute and
`group = label * n_spurious + spurious`, plus a `fingerprint` of everything that determines
the contents (used in content-keyed feature caches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from labshared.errors import ConfigError, DataLayoutError

SPLITS = ("train", "val", "test")
#: The split codes of Waterbirds' `metadata.csv` and CelebA's `list_eval_partition`.
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@dataclass
class GroupShiftSplit:
    """One split of a group-shift dataset.

    Attributes:
        dataset: registry name ("waterbirds", "celeba", "spuco-animals", "toy", ...).
        split: "train", "val" or "test".
        label, spurious: (N,) int64 arrays.
        n_classes, n_spurious: numbers of label and spurious values (groups are their product).
        class_names, spurious_names: readable names in index order.
        paths: image files (file-based datasets) or None.
        images: uint8 (N, 3, H, W) tensor (toy world) or None.
        hf_images: a Hugging Face Dataset with one image column, or None.
        captions: one caption per image where the dataset has them (toy world).
        fingerprint: what determines the contents; part of every feature-cache key.
    """

    dataset: str
    split: str
    label: np.ndarray
    spurious: np.ndarray
    n_classes: int
    n_spurious: int
    class_names: tuple[str, ...]
    spurious_names: tuple[str, ...]
    paths: list[Path] | None = None
    images: torch.Tensor | None = None
    hf_images: Any = None
    captions: list[str] | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def group(self) -> np.ndarray:
        """(N,) int64 group of each image: `label * n_spurious + spurious`."""
        return self.label * self.n_spurious + self.spurious

    @property
    def n_groups(self) -> int:
        """Number of groups: `n_classes * n_spurious`."""
        return self.n_classes * self.n_spurious

    def image(self, i: int) -> Image.Image:
        """Image i as an RGB PIL image.

        Raises:
            DataLayoutError: a listed image file is missing or unreadable.
        """
        if self.images is not None:
            return Image.fromarray(self.images[i].permute(1, 2, 0).contiguous().numpy())
        if self.hf_images is not None:
            return self.hf_images[int(i)][self.hf_images.column_names[0]].convert("RGB")
        assert self.paths is not None
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise DataLayoutError(path, "image file listed in the metadata is missing") from None
        except OSError as exc:
            raise DataLayoutError(path, f"cannot read the image ({exc})") from None


class ImageDataset(torch.utils.data.Dataset):
    """`(transform(image), index)` pairs of a split, for a DataLoader."""

    def __init__(self, data: GroupShiftSplit, transform: Callable[[Image.Image], torch.Tensor]):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.data.image(i)), i


def check_split(split: str) -> None:
    """Raise `ConfigError` unless `split` is one of SPLITS."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}; expected one of {', '.join(SPLITS)}")


def read_csv(path: Path, layout: str, **kwargs: Any) -> Any:
    """`pandas.read_csv(path, **kwargs)`, or a `DataLayoutError` showing `layout`.

    Raises:
        DataLayoutError: the file is missing or not a readable CSV.
    """
    # pandas takes ~0.3 s to import and only the file-based loaders need it (start-up time).
    import pandas as pd

    if not path.is_file():
        raise DataLayoutError(path, "file not found", layout)
    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataLayoutError(path, f"not a readable CSV ({exc})", layout) from None


def int_column(df: Any, column: str, path: Path, allowed: Sequence[int], layout: str) -> np.ndarray:
    """Column `column` of the data frame `df` (read from `path`) as int64 values in `allowed`.

    Raises:
        DataLayoutError: the column is missing, holds a non-integer or a value outside
            `allowed` (naming the row).
    """
    if column not in df.columns:
        raise DataLayoutError(
            path, f"field '{column}' missing (columns: {', '.join(map(str, df.columns))})", layout
        )
    values = df[column]
    try:
        arr = values.to_numpy(dtype=np.int64)
    except (ValueError, TypeError):
        bad = next(v for v in values if not str(v).lstrip("-").isdigit())
        raise DataLayoutError(
            path, f"field '{column}' holds a non-integer value {bad!r}", layout
        ) from None
    wrong = ~np.isin(arr, list(allowed))
    if wrong.any():
        row = int(np.argmax(wrong))
        raise DataLayoutError(
            path,
            f"field '{column}' row {row + 1} is {arr[row]}; expected one of {list(allowed)}",
            layout,
        )
    return arr
