"""Records and image sources shared by every composed-retrieval loader, plus the strict
JSON readers whose errors name the file, the item and the field."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from labshared.cache import fingerprint_files
from labshared.errors import ConfigError, DataLayoutError

GENECIS_DILATION = 0.7  # genecis datasets/vaw_dataset.py DILATION


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class CIRQuery:
    """One composed query.

    Attributes:
        query_id: CIRR `pairid`, CIRCO `id`, otherwise the item index (as a string).
        reference: image name of the reference.
        captions: modification text(s): one, or FashionIQ's two raw captions.
        targets: ground-truth image names (CIRCO: target_img_id first, then the other
            gt_img_ids); empty on test splits.
        subset: CIRR `img_set.members` (reference included, as in the file).
        gallery: GeneCIS' per-query gallery (target first); empty when the benchmark has
            one global gallery.
        groups: the groups a query is scored in besides the whole benchmark (the toy
            world: the attribute its modification changes, `digit`, `colour` or
            `background`); empty when the benchmark has none.
    """

    query_id: str
    reference: str
    captions: tuple[str, ...]
    targets: tuple[str, ...] = ()
    subset: tuple[str, ...] = ()
    gallery: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


class ImageSource(Protocol):
    """Opens a benchmark's images by name, and says what determines them."""

    def load(self, name: str) -> Image.Image:
        """Image `name` as an RGB PIL image."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What determines the images (for feature-cache keys)."""
        ...


@dataclass
class CIRBenchmark:
    """One evaluable benchmark part (e.g. FashionIQ `dress` val, GeneCIS `change_object`)."""

    dataset: str
    split: str
    queries: list[CIRQuery]
    gallery: list[str]
    images: ImageSource
    part: str | None = None
    annotation_files: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """`dataset`, or `dataset-part` for a benchmark part (e.g. `fashioniq-dress`)."""
        return f"{self.dataset}-{self.part}" if self.part else self.dataset

    def image_names(self) -> list[str]:
        """Every image the protocol encodes (gallery, references, subsets, per-query
        galleries), each once, in first-seen order."""
        seen: dict[str, None] = dict.fromkeys(self.gallery)
        for q in self.queries:
            seen.setdefault(q.reference)
            for name in (*q.gallery, *q.subset):
                seen.setdefault(name)
        return list(seen)

    def fingerprint(self) -> dict[str, Any]:
        """What determines the image features: which images, from where."""
        digest = hashlib.sha256("\n".join(self.image_names()).encode()).hexdigest()[:16]
        return {
            "benchmark": self.name,
            "split": self.split,
            "images": digest,
            "source": self.images.fingerprint(),
        }


# --------------------------------------------------------------------------- image sources
def _open_rgb(path: Path, layout: str) -> Image.Image:
    if not path.is_file():
        raise DataLayoutError(path, "image file missing", layout)
    with Image.open(path) as img:
        return img.convert("RGB")


@dataclass
class FileImages:
    """Images on disk: `paths[name]`; `annotations` are the files the loader read them
    from (they join the fingerprint: one rule for every file a loader reads)."""

    paths: Mapping[str, Path]
    root: Path
    layout: str = ""
    annotations: Sequence[Path] = ()

    def load(self, name: str) -> Image.Image:
        """Image `name` as RGB; a missing file raises `DataLayoutError` with the layout."""
        return _open_rgb(self.paths[name], self.layout)

    def fingerprint(self) -> dict[str, Any]:
        """The root and `fingerprint_files` of every image and annotation file (path,
        size, mtime): a rewritten or replaced image changes the feature-cache key."""
        return {
            "kind": "files",
            "root": str(self.root.resolve()),
            "files": fingerprint_files(self.root, [*self.paths.values(), *self.annotations]),
        }


@dataclass
class CroppedImages:
    """GeneCIS attribute-task crops: the instance box dilated by 0.7 of its size (clipped
    to the image), then padded to a square with black, as `vaw_dataset.py` does."""

    boxes: Mapping[str, tuple[Path, tuple[float, float, float, float]]]
    root: Path
    layout: str = ""
    annotations: Sequence[Path] = ()

    def load(self, name: str) -> Image.Image:
        """The dilated, square-padded crop `name` as RGB."""
        path, (x, y, w, h) = self.boxes[name]
        img = _open_rgb(path, self.layout)
        d = GENECIS_DILATION
        left, top = max(0.0, x - d * w), max(0.0, y - d * h)
        right, bottom = min(img.width, left + (1 + d) * w), min(img.height, top + (1 + d) * h)
        crop = img.crop((left, top, right, bottom))
        side = max(crop.size)
        square = Image.new("RGB", (side, side), (0, 0, 0))
        square.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
        return square

    def fingerprint(self) -> dict[str, Any]:
        """The root, `fingerprint_files` of the source images and annotation file, and the
        dilation."""
        files = [*(p for p, _ in self.boxes.values()), *self.annotations]
        return {
            "kind": "genecis-crops",
            "root": str(self.root.resolve()),
            "files": fingerprint_files(self.root, files),
            "dilation": GENECIS_DILATION,
        }


@dataclass
class TensorImages:
    """In-memory uint8 (3, H, W) images (the toy world); `sources` fingerprints what they
    were generated from (`labshared.toy.sources.toy_fingerprint`)."""

    tensors: Mapping[str, Any]
    tag: str
    sources: Mapping[str, str] = field(default_factory=dict)

    def load(self, name: str) -> Image.Image:
        """Tensor `name` as an RGB PIL image."""
        return Image.fromarray(self.tensors[name].permute(1, 2, 0).contiguous().numpy())

    def fingerprint(self) -> dict[str, Any]:
        """The tag naming the generator's settings and the fingerprint of its sources."""
        return {"kind": "tensors", "tag": self.tag, "sources": dict(self.sources)}


@dataclass
class ColumnImages:
    """Images held in a `datasets` image column: `rows[name]` indexes `table`."""

    table: Any
    column: str
    rows: Mapping[str, int]
    tag: str

    def load(self, name: str) -> Image.Image:
        """Row `rows[name]` of the image column, as RGB."""
        return self.table[self.rows[name]][self.column].convert("RGB")

    def fingerprint(self) -> dict[str, Any]:
        """The tag naming the hub dataset and split, and the `datasets` fingerprint of the
        table (derived from its Arrow files in the Hugging Face cache)."""
        return {
            "kind": "hf",
            "tag": self.tag,
            "hf_fingerprint": getattr(self.table, "_fingerprint", None),
        }


# --------------------------------------------------------------------------- JSON helpers
def read_json(path: Path, layout: str) -> Any:
    """The parsed JSON file at `path`.

    Raises:
        DataLayoutError: the file is missing or not valid JSON (showing `layout`).
    """
    if not path.is_file():
        raise DataLayoutError(path, "missing", layout)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataLayoutError(path, f"not valid JSON ({exc})", layout) from None


def field_of(
    item: Any, key: str, kind: type | tuple[type, ...], path: Path, index: int, layout: str
) -> Any:
    """`item[key]`, checked to be an instance of `kind`.

    Raises:
        DataLayoutError: `item` (number `index` of `path`) is not an object, lacks `key`,
            or holds a value of another type, naming the file, the item and the field.
    """
    if not isinstance(item, dict):
        raise DataLayoutError(
            path, f"item {index} is a {type(item).__name__}, expected an object", layout
        )
    if key not in item:
        raise DataLayoutError(path, f"item {index}: field {key!r} missing", layout)
    value = item[key]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataLayoutError(
            path, f"item {index}: field {key!r} is {type(value).__name__}, expected {want}", layout
        )
    return value


def list_of(data: Any, path: Path, layout: str) -> list:
    """`data`, checked to be a JSON list (else a `DataLayoutError` naming `path`)."""
    if not isinstance(data, list):
        raise DataLayoutError(path, f"expected a JSON list, found {type(data).__name__}", layout)
    return data


def check_split(dataset: str, split: str, allowed: Sequence[str]) -> None:
    """Raise `ConfigError` unless `split` is one of `allowed` for `dataset`."""
    if split not in allowed:
        raise ConfigError(
            f"--split {split!r} is not available for {dataset}; "
            f"expected one of {', '.join(allowed)}"
        )
