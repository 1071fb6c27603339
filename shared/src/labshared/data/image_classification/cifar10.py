"""CIFAR-10: the official `cifar-10-batches-py` pickle batches, read with a restricted
unpickler that rebuilds numpy arrays and nothing else; a folder written by
`datasets.Dataset(Dict).save_to_disk`; or `hf:<dataset id or local folder>` passed to
`datasets.load_dataset` (columns `img` or `image`, and `label`)."""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from labshared.cache import hf_datasets_cache
from labshared.data.image_classification.records import (
    ArrayImageDataset,
    HFImageDataset,
    folder_fingerprint,
)
from labshared.errors import DataLayoutError

CIFAR10_LAYOUT = """\
<root>/                       (or <root> = the cifar-10-batches-py folder itself)
  cifar-10-batches-py/
    data_batch_1 ... data_batch_5   pickled dicts
                                    {b'data': uint8 (N, 3072), b'labels': [N ints 0-9]}
    test_batch                      same fields
    batches.meta                    (optional)
or a `save_to_disk` folder, or hf:<dataset id | local folder> with columns img (or image), label"""


def check_cifar_files(path: Path, split: str) -> None:
    """The batch files of `split` exist (by name: none is read), unless `path` is a
    `save_to_disk` folder, which the loader checks.

    Raises:
        DataLayoutError: the first missing batch file, with the expected layout.
    """
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return
    batches_dir = path if (path / "test_batch").exists() else path / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for name in names:
        if not (batches_dir / name).is_file():
            raise DataLayoutError(batches_dir / name, "missing", CIFAR10_LAYOUT)


def _numpy_core(module: str) -> Any:
    """numpy._core.<module> (numpy 2), else numpy.core.<module> (numpy 1)."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{module}")


class SafeNumpyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds plain containers and numpy arrays, and refuses any other
    global (no arbitrary code runs when reading a downloaded batch file)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes written by Python 3 under protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        """The allowed global `module.name`; any other raises `pickle.UnpicklingError`."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        if name == "_reconstruct":
            return _numpy_core("multiarray")._reconstruct
        if name == "_frombuffer":
            return _numpy_core("numeric")._frombuffer
        if name == "encode":
            return codecs.encode
        return getattr(np, name)


def load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one official batch file -> (uint8 images (N, 32, 32, 3), int64 labels (N,)).

    Raises:
        DataLayoutError: missing file, not a pickle of the expected dict, or a field of the
            wrong type/shape (the message names the field).
    """
    if not path.is_file():
        raise DataLayoutError(path, "missing", CIFAR10_LAYOUT)
    try:
        with path.open("rb") as f:
            entry = SafeNumpyUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataLayoutError(
            path, f"not a CIFAR-10 batch pickle ({exc})", CIFAR10_LAYOUT
        ) from None
    if not isinstance(entry, dict):
        raise DataLayoutError(
            path, f"expected a dict, found {type(entry).__name__}", CIFAR10_LAYOUT
        )
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    for field in ("data", "labels"):
        if field not in entry:
            raise DataLayoutError(
                path, f"field b'{field}' absent (found {sorted(entry)})", CIFAR10_LAYOUT
            )
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataLayoutError(
            path, f"field b'data': expected a uint8 array (N, 3072), found {shape}", CIFAR10_LAYOUT
        )
    labels = np.asarray(entry["labels"])
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataLayoutError(
            path,
            f"field b'labels': expected {len(data)} integers, found shape {labels.shape} "
            f"dtype {labels.dtype}",
            CIFAR10_LAYOUT,
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataLayoutError(path, "field b'labels': values outside 0-9", CIFAR10_LAYOUT)
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def load_cifar10(root: str, split: str, transform: Callable) -> Dataset:
    """The split from `root`: `hf:<id or folder>`, a `save_to_disk` folder, or the
    official batches (in `root` or its `cifar-10-batches-py/`), with its fingerprint."""
    if root.startswith("hf:"):
        return _hf_dataset(root[3:], split, transform)
    path = Path(root)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _hf_dataset(str(path), split, transform, from_disk=True)
    batches_dir = path if (path / "test_batch").exists() else path / "cifar-10-batches-py"
    if not batches_dir.is_dir():
        raise DataLayoutError(batches_dir, "missing", CIFAR10_LAYOUT)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [load_cifar_batch(batches_dir / n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    dataset = ArrayImageDataset(images, labels, transform)
    dataset.fingerprint = folder_fingerprint(batches_dir, names)
    return dataset


def _hf_dataset(source: str, split: str, transform: Callable, from_disk: bool = False) -> Dataset:
    """A hub id or local folder through `datasets` (offline-safe when the data is local)."""
    # `datasets` takes ~1 s to import and only the Hugging Face sources need it (start-up time).
    import datasets

    local = Path(source).is_dir()
    try:
        if from_disk:
            loaded = datasets.load_from_disk(source)
            if not isinstance(loaded, datasets.DatasetDict) or split not in loaded:
                found = list(loaded) if isinstance(loaded, datasets.DatasetDict) else "one split"
                raise DataLayoutError(
                    Path(source),
                    f"a save_to_disk folder must hold a DatasetDict with train and test "
                    f"splits; found {found}",
                    CIFAR10_LAYOUT,
                )
            hf = loaded[split]
        elif local:
            # a local folder (parquet, imagefolder, ...): `datasets` builds an Arrow copy,
            # kept under LABSHARED_CACHE like every cache the tools fill
            hf = datasets.load_dataset(source, split=split, cache_dir=str(hf_datasets_cache()))
        else:  # a hub id: read from the Hugging Face cache it was downloaded to
            hf = datasets.load_dataset(source, split=split)
    except (FileNotFoundError, ValueError, KeyError, ConnectionError) as exc:
        raise DataLayoutError(
            Path(source),
            f"could not load split {split!r} ({type(exc).__name__}: {exc})",
            CIFAR10_LAYOUT,
        ) from None
    columns = set(hf.column_names)
    image_col = "img" if "img" in columns else "image" if "image" in columns else None
    if image_col is None or "label" not in columns:
        raise DataLayoutError(
            Path(source),
            f"split {split!r}: expected columns img (or image) and label, found {sorted(columns)}",
            CIFAR10_LAYOUT,
        )
    dataset = HFImageDataset(hf, image_col, transform)
    # a local folder: every file in it; a hub id: the `datasets` fingerprint of its
    # cached Arrow files (derived from the downloaded revision)
    dataset.fingerprint = (
        folder_fingerprint(Path(source))
        if local
        else {"hf": source, "hf_fingerprint": hf._fingerprint}
    )
    return dataset
