"""Group-shift classification loaders: Waterbirds, CelebA, SpuCoAnimals, Hugging Face
copies, and the offline toy world.

Every loader returns a `GroupShiftSplit`: the images (file paths, an in-memory uint8
tensor or a Hugging Face image column), the class `label`, the `spurious` attribute and
`group = label * n_spurious + spurious`, plus a `fingerprint` of everything that determines
the contents (used in content-keyed feature caches).

On-disk layouts (official ones; `DataLayoutError` shows them when a file is missing or
malformed, naming the file and the field):

- Waterbirds (`waterbird_complete95_forest2water2`, group_DRO's
  `dataset_scripts/generate_waterbirds.py`, also WILDS `waterbirds_v1.0`): `metadata.csv`
  with img_id, img_filename, y, split (0/1/2 = train/val/test), place, place_filename;
  label y (landbird 0 / waterbird 1), spurious place (land 0 / water 1).
- CelebA (the official release, or WILDS `celebA_v1.0` / Kaggle CSVs):
  `list_attr_celeba.csv` or `.txt`, `list_eval_partition.csv` or `.txt`,
  `img_align_celeba/`; label Blond_Hair, spurious Male, both mapped -1/1 -> 0/1 as WILDS
  does.
- SpuCoAnimals (SpuCo's `spuco_birds.py` / `spuco_dogs.py` / `spuco_animals.py`):
  `spuco_birds/<split>/{landbirds,waterbirds}/{land,water}/*` and
  `spuco_dogs/<split>/{small_dogs,big_dogs}/{indoor,outdoor}/*`; labels 0..3 (landbird,
  waterbird, small dog, big dog), spurious 0..3 (land, water, indoor, outdoor).
- Hugging Face copies (`datasets.load_dataset`, offline-safe, or a `save_to_disk` folder):
  `grodino/waterbirds` (= `salman53/waterbirds`), `pietrolesci/celeba-wilds`,
  `tpremoli/CelebA-attrs`, `flwrlabs/celeba`. None is the exact WILDS file set.
- The toy world: `labshared.toy.spurious_split` (digits on grass / brick, 95 % train
  correlation, balanced val and test).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from labshared.cache import file_fingerprint
from labshared.errors import ConfigError, DataLayoutError

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}

WATERBIRDS_LAYOUT = """\
<root>/                          (waterbird_complete95_forest2water2 or waterbirds_v1.0)
  metadata.csv                   img_id,img_filename,y,split,place,place_filename
                                 y: 0 landbird / 1 waterbird; split: 0 train, 1 val, 2 test;
                                 place: 0 land / 1 water
  001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg   (img_filename, relative)
  ..."""

CELEBA_LAYOUT = """\
<root>/                          (the official release, WILDS celebA_v1.0 or Kaggle)
  list_attr_celeba.csv           image_id,5_o_Clock_Shadow,...,Blond_Hair,...,Male,...  (-1/1)
    or list_attr_celeba.txt      line 1: count; line 2: the 40 names; then '<file> -1 1 ...'
  list_eval_partition.csv        image_id,partition  (0 train, 1 val, 2 test)
    or list_eval_partition.txt   '<file> <partition>'
  img_align_celeba/              000001.jpg ... (or img_align_celeba/img_align_celeba/)"""

SPUCO_ANIMALS_LAYOUT = """\
<root>/
  spuco_birds/<split>/landbirds/land/*.jpg     label 0, spurious 0
  spuco_birds/<split>/landbirds/water/*.jpg    label 0, spurious 1
  spuco_birds/<split>/waterbirds/land/*.jpg    label 1, spurious 0
  spuco_birds/<split>/waterbirds/water/*.jpg   label 1, spurious 1
  spuco_dogs/<split>/small_dogs/indoor/*.jpg   label 2, spurious 2
  spuco_dogs/<split>/small_dogs/outdoor/*.jpg  label 2, spurious 3
  spuco_dogs/<split>/big_dogs/indoor/*.jpg     label 3, spurious 2
  spuco_dogs/<split>/big_dogs/outdoor/*.jpg    label 3, spurious 3
  (<split> is train, val or test)"""

HF_LAYOUT = """\
a Hugging Face dataset (hub id in the local cache, or a save_to_disk folder) with
  an image column (Image feature, or 'image'/'img'),
  a label column ('label', 'y' or 'Blond_Hair'), a spurious column ('place', 'Male', 'a'),
  and splits train / validation (or val, valid) / test"""


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
        return self.label * self.n_spurious + self.spurious

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_spurious

    def image(self, i: int) -> Image.Image:
        """Image i as an RGB PIL image."""
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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}; expected one of {', '.join(SPLITS)}")


def _read_csv(path: Path, layout: str, **kwargs):
    import pandas as pd

    if not path.is_file():
        raise DataLayoutError(path, "file not found", layout)
    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataLayoutError(path, f"not a readable CSV ({exc})", layout) from None


def _int_column(df, column: str, path: Path, allowed: Sequence[int], layout: str) -> np.ndarray:
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


# --------------------------------------------------------------------------- Waterbirds
def load_waterbirds(root: str | Path, split: str) -> GroupShiftSplit:
    """Waterbirds from `metadata.csv` (see module docstring)."""
    _check_split(split)
    root = Path(root)
    meta_path = root / "metadata.csv"
    df = _read_csv(meta_path, WATERBIRDS_LAYOUT)
    if "img_filename" not in df.columns:
        raise DataLayoutError(meta_path, "field 'img_filename' missing", WATERBIRDS_LAYOUT)
    y = _int_column(df, "y", meta_path, (0, 1), WATERBIRDS_LAYOUT)
    splits = _int_column(df, "split", meta_path, (0, 1, 2), WATERBIRDS_LAYOUT)
    place = _int_column(df, "place", meta_path, (0, 1), WATERBIRDS_LAYOUT)
    keep = splits == _SPLIT_CODE[split]
    files = df["img_filename"].to_numpy()[keep]
    paths = [root / str(f) for f in files]
    if paths and not paths[0].is_file():
        raise DataLayoutError(paths[0], "image listed in metadata.csv not found", WATERBIRDS_LAYOUT)
    return GroupShiftSplit(
        dataset="waterbirds",
        split=split,
        label=y[keep],
        spurious=place[keep],
        n_classes=2,
        n_spurious=2,
        class_names=("landbird", "waterbird"),
        spurious_names=("land", "water"),
        paths=paths,
        fingerprint={
            "dataset": "waterbirds",
            "split": split,
            "metadata": file_fingerprint(meta_path),
        },
    )


# --------------------------------------------------------------------------- CelebA
def _celeba_csv(csv: Path):
    """An official-style CelebA CSV (attributes or partition) indexed by `image_id`."""
    df = _read_csv(csv, CELEBA_LAYOUT)
    if "image_id" not in df.columns:
        raise DataLayoutError(csv, "field 'image_id' missing", CELEBA_LAYOUT)
    return df.set_index("image_id")


def _celeba_attrs(root: Path):
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


def _celeba_partition(root: Path):
    csv, txt = root / "list_eval_partition.csv", root / "list_eval_partition.txt"
    if csv.is_file():
        return _celeba_csv(csv), csv
    if txt.is_file():
        df = _read_csv(txt, CELEBA_LAYOUT, sep=r"\s+", header=None, names=["image_id", "partition"])
        return df.set_index("image_id"), txt
    raise DataLayoutError(
        csv, "partition file not found (nor list_eval_partition.txt)", CELEBA_LAYOUT
    )


def load_celeba(
    root: str | Path, split: str, target: str = "Blond_Hair", confounder: str = "Male"
) -> GroupShiftSplit:
    """CelebA from the official attribute/partition files (see module docstring)."""
    _check_split(split)
    root = Path(root)
    attrs, attr_path = _celeba_attrs(root)
    part, part_path = _celeba_partition(root)
    partition = _int_column(part, "partition", part_path, (0, 1, 2), CELEBA_LAYOUT)
    ids = part.index.to_numpy()[partition == _SPLIT_CODE[split]]
    missing = np.setdiff1d(ids, attrs.index.to_numpy())
    if missing.size:
        raise DataLayoutError(
            attr_path,
            f"no attribute row for {missing.size} image(s), e.g. {missing[0]!r}",
            CELEBA_LAYOUT,
        )
    sub = attrs.loc[ids]
    y = (_int_column(sub, target, attr_path, (-1, 0, 1), CELEBA_LAYOUT) > 0).astype(np.int64)
    a = (_int_column(sub, confounder, attr_path, (-1, 0, 1), CELEBA_LAYOUT) > 0).astype(np.int64)
    img_dir = root / "img_align_celeba"
    if (img_dir / "img_align_celeba").is_dir():  # the Kaggle zip nests the folder
        img_dir = img_dir / "img_align_celeba"
    if not img_dir.is_dir():
        raise DataLayoutError(img_dir, "image folder not found", CELEBA_LAYOUT)
    return GroupShiftSplit(
        dataset="celeba",
        split=split,
        label=y,
        spurious=a,
        n_classes=2,
        n_spurious=2,
        class_names=("non-blond", "blond"),
        spurious_names=("female", "male"),
        paths=[img_dir / str(i) for i in ids],
        fingerprint={
            "dataset": "celeba",
            "split": split,
            "target": target,
            "confounder": confounder,
            "attributes": file_fingerprint(attr_path),
            "partition": file_fingerprint(part_path),
        },
    )


# --------------------------------------------------------------------------- SpuCoAnimals
_SPUCO_FOLDERS = (  # (subset, class folder, spurious folder, label, spurious)
    ("spuco_birds", "landbirds", "land", 0, 0),
    ("spuco_birds", "landbirds", "water", 0, 1),
    ("spuco_birds", "waterbirds", "land", 1, 0),
    ("spuco_birds", "waterbirds", "water", 1, 1),
    ("spuco_dogs", "small_dogs", "indoor", 2, 2),
    ("spuco_dogs", "small_dogs", "outdoor", 2, 3),
    ("spuco_dogs", "big_dogs", "indoor", 3, 2),
    ("spuco_dogs", "big_dogs", "outdoor", 3, 3),
)


def load_spuco_animals(root: str | Path, split: str) -> GroupShiftSplit:
    """SpuCoAnimals in SpuCo's folder layout (see module docstring)."""
    _check_split(split)
    root = Path(root)
    paths: list[Path] = []
    labels: list[int] = []
    spurious: list[int] = []
    for subset, cls, place, y, a in _SPUCO_FOLDERS:
        folder = root / subset / split / cls / place
        if not folder.is_dir():
            raise DataLayoutError(folder, "folder not found", SPUCO_ANIMALS_LAYOUT)
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataLayoutError(folder, "folder holds no images", SPUCO_ANIMALS_LAYOUT)
        paths += files
        labels += [y] * len(files)
        spurious += [a] * len(files)
    return GroupShiftSplit(
        dataset="spuco-animals",
        split=split,
        label=np.array(labels, dtype=np.int64),
        spurious=np.array(spurious, dtype=np.int64),
        n_classes=4,
        n_spurious=4,
        class_names=("landbird", "waterbird", "small dog", "big dog"),
        spurious_names=("land", "water", "indoor", "outdoor"),
        paths=paths,
        fingerprint={
            "dataset": "spuco-animals",
            "split": split,
            "root": str(root.resolve()),
            "files": [(str(p.relative_to(root)), p.stat().st_size) for p in paths],
        },
    )


# --------------------------------------------------------------------------- Hugging Face
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


def _hf_open(source: str, config: str | None):
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


def _hf_column(ds, wanted: str | None, candidates: Sequence[str], what: str, source: str) -> str:
    cols = ds.column_names
    for c in [wanted] if wanted else list(candidates):
        if c in cols:
            return c
    raise DataLayoutError(
        source,
        f"no {what} column (wanted {wanted or ' or '.join(candidates)}; columns: {cols})",
        HF_LAYOUT,
    )


def _to_binary(values, column: str, source: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    arr = arr.astype(np.int64)
    if not np.isin(arr, (-1, 0, 1)).all():
        raise DataLayoutError(
            source, f"column '{column}' holds values other than -1/0/1", HF_LAYOUT
        )
    return (arr > 0).astype(np.int64)


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
    """
    _check_split(split)
    known = HF_COPIES.get(source)
    kind = kind or (known.kind if known else None)
    dd = _hf_open(source, config or (known.config if known else None))
    if hasattr(dd, "keys"):  # a DatasetDict
        names = [s for s in _HF_SPLITS[split] if s in dd]
        if not names:
            raise DataLayoutError(
                source, f"no split for {split!r} (has {list(dd.keys())})", HF_LAYOUT
            )
        ds = dd[names[0]]
    else:
        ds = dd
    import datasets

    image_cols = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    image_col = (
        image_cols[0] if image_cols else _hf_column(ds, None, ("image", "img"), "image", source)
    )
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
            "label": y_col,
            "spurious": a_col,
        },
    )


# --------------------------------------------------------------------------- toy world
def load_toy(
    split: str,
    n: int,
    *,
    corr: float = 0.95,
    size: int = 32,
    seed: int = 0,
    class_fn: str = "digit<5",
    spurious: tuple[str, str] = ("grass", "brick"),
) -> GroupShiftSplit:
    """The toy digits-on-textures world (`labshared.toy.spurious_split`): label = small vs
    large digit, spurious = grass vs brick background, `corr` train correlation."""
    from labshared import toy

    _check_split(split)
    gs = toy.spurious_split(
        split, n, corr=corr, class_fn=class_fn, spurious=spurious, size=size, seed=seed
    )
    return GroupShiftSplit(
        dataset="toy",
        split=split,
        label=gs.label.numpy().astype(np.int64),
        spurious=gs.spurious.numpy().astype(np.int64),
        n_classes=2,
        n_spurious=2,
        class_names=tuple(gs.label_names),
        spurious_names=tuple(gs.spurious_names),
        images=gs.images,
        captions=gs.captions,
        fingerprint={
            "dataset": "toy",
            "split": split,
            "n": n,
            "corr": corr,
            "size": size,
            "seed": seed,
            "class_fn": class_fn,
            "spurious": list(spurious),
            "toy_code": file_fingerprint(toy.__file__),  # a changed renderer is new data
        },
    )


# --------------------------------------------------------------------------- registry
GROUP_SHIFT_DATASETS: dict[str, str] = {
    "waterbirds": WATERBIRDS_LAYOUT,
    "celeba": CELEBA_LAYOUT,
    "spuco-animals": SPUCO_ANIMALS_LAYOUT,
    "hf": HF_LAYOUT,
    "toy": "generated in memory by labshared.toy (no files)",
}


def build_group_shift(
    name: str, root: str | Path | None, split: str, **kwargs: Any
) -> GroupShiftSplit:
    """The one way in: `name` is a key of GROUP_SHIFT_DATASETS (for "hf", `root` is the hub
    id or save_to_disk folder); toy keyword arguments go to `load_toy`."""
    if name == "toy":
        return load_toy(split, **kwargs)
    if name not in GROUP_SHIFT_DATASETS:
        close = difflib.get_close_matches(name, GROUP_SHIFT_DATASETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown dataset {name!r}; known: {', '.join(GROUP_SHIFT_DATASETS)}{hint}"
        )
    if root is None:
        raise ConfigError(
            f"dataset {name!r} needs --data-root; expected layout:\n{GROUP_SHIFT_DATASETS[name]}"
        )
    if name == "hf":
        return load_hf_group_shift(str(root), split, **kwargs)
    loader = {
        "waterbirds": load_waterbirds,
        "celeba": load_celeba,
        "spuco-animals": load_spuco_animals,
    }[name]
    return loader(root, split, **kwargs)
