"""The map-style datasets every image-classification source returns, and the fingerprint
of a folder's files (the key any cache of a dataset's contents uses)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from labshared.cache import fingerprint_files


class ArrayImageDataset(Dataset):
    """uint8 images (N, H, W, C) or (N, H, W) with integer labels, transformed on access."""

    fingerprint: dict[str, Any]  # set by `build_dataset`

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        assert len(images) == len(labels)
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class HFImageDataset(Dataset):
    """A Hugging Face `datasets.Dataset` with an image column and a label column."""

    fingerprint: dict[str, Any]  # set by `build_dataset`

    def __init__(self, hf: Any, image_col: str, transform: Callable) -> None:
        self.hf = hf
        self.image_col = image_col
        self.labels = np.asarray(hf["label"], dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.hf[int(i)][self.image_col]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        return self.transform(img.convert("RGB")), int(self.labels[i])


class FileListDataset(Dataset):
    """Images on disk listed as (path, label) pairs, decoded as RGB on access."""

    fingerprint: dict[str, Any]  # set by `build_dataset`

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable) -> None:
        self.samples = samples
        self.labels = np.asarray([y for _, y in samples], dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


def folder_fingerprint(root: Path, names: list[str] | None = None) -> dict[str, Any]:
    """The folder and `fingerprint_files` of `names` in it (None: every file under it)."""
    return {"root": str(root.resolve()), "files": fingerprint_files(root, names)}
