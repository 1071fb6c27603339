"""Composed image retrieval benchmarks: FashionIQ, CIRR, CIRCO, GeneCIS and the toy world.

Every loader reads the benchmark's official on-disk layout (the one SEARLE, LinCIR and RTD
read; trees in the `*_LAYOUT` strings below) into one neutral form, `CIRBenchmark`: a list
of `CIRQuery` (reference image, modification text(s), ground truths, CIRR's subset, a
per-query gallery for GeneCIS), a global gallery of image names, and an `ImageSource` that
opens an image by name. Protocols (prompts, reference removal, metrics) live in the tool;
this module only reads data. Malformed annotations raise `DataLayoutError` naming the
file, the item and the field.

Sources: `XiaoxiaoGuo/fashion-iq` (+ `SEARLE:src/datasets.py::FashionIQDataset`),
`Cuberick-Orion/CIRR` (`CIRRDataset`), `miccunifi/CIRCO` (`CIRCODataset`),
`facebookresearch/genecis` (`datasets/coco_dataset.py`, `datasets/vaw_dataset.py`: VG crops
dilated by 0.7 and padded to square). Hugging Face copies: `royokong/cirr_val`,
`royokong/cirr_imgs`, `royokong/fashioniq_val`, `royokong/fashioniq_val_imgs`
(unofficial mirrors, `--data-root hf`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labshared.errors import ConfigError, DataLayoutError

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
GENECIS_TASKS = ("focus_attribute", "change_attribute", "focus_object", "change_object")
GENECIS_DILATION = 0.7  # genecis datasets/vaw_dataset.py DILATION

FASHIONIQ_LAYOUT = """\
fashionIQ_dataset/
    captions/cap.{dress,shirt,toptee}.{train,val,test}.json   [{"target", "candidate", "captions": [c1, c2]}]
    image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   [asin, ...]
    images/<asin>.jpg   (or .png, as Pic2Word's download)"""
CIRR_LAYOUT = """\
CIRR/
    cirr/captions/cap.rc2.{train,val,test1}.json   [{"pairid", "reference", "target_hard", "caption", "img_set": {"members"}}]
    cirr/image_splits/split.rc2.{train,val,test1}.json   {name: "./dev/<name>.png"}
    train/, dev/, test1/   (NLVR2 images at the relative paths above)"""
CIRCO_LAYOUT = """\
CIRCO/
    annotations/{val,test}.json   [{"id", "reference_img_id", "relative_caption", "target_img_id", "gt_img_ids"}]
    COCO2017_unlabeled/annotations/image_info_unlabeled2017.json   {"images": [{"id", "file_name"}]}
    COCO2017_unlabeled/unlabeled2017/<000000xxxxxx>.jpg"""
GENECIS_LAYOUT = """\
genecis/
    genecis/{focus,change}_{attribute,object}.json   [{"reference", "target", "condition", "gallery": [...]}]
    val2017/<val_image_id:012d>.jpg   (COCO 2017 val, object tasks)
    VG_100K_all/<image_id>.jpg        (Visual Genome 1.2, attribute tasks; "instance_bbox" crops)"""


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
    """

    query_id: str
    reference: str
    captions: tuple[str, ...]
    targets: tuple[str, ...] = ()
    subset: tuple[str, ...] = ()
    gallery: tuple[str, ...] = ()


class ImageSource(Protocol):
    def load(self, name: str): ...  # -> PIL.Image.Image (RGB)

    def fingerprint(self) -> dict[str, Any]: ...


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
def _open_rgb(path: Path, layout: str):
    from PIL import Image

    if not path.is_file():
        raise DataLayoutError(path, "image file missing", layout)
    with Image.open(path) as img:
        return img.convert("RGB")


@dataclass
class FileImages:
    """Images on disk: `paths[name]`."""

    paths: Mapping[str, Path]
    root: Path
    layout: str = ""

    def load(self, name: str):
        return _open_rgb(self.paths[name], self.layout)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "files", "root": str(self.root.resolve())}


@dataclass
class CroppedImages:
    """GeneCIS attribute-task crops: the instance box dilated by 0.7 of its size (clipped
    to the image), then padded to a square with black, as `vaw_dataset.py` does."""

    boxes: Mapping[str, tuple[Path, tuple[float, float, float, float]]]
    root: Path
    layout: str = ""

    def load(self, name: str):
        from PIL import Image

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
        return {
            "kind": "genecis-crops",
            "root": str(self.root.resolve()),
            "dilation": GENECIS_DILATION,
        }


@dataclass
class TensorImages:
    """In-memory uint8 (3, H, W) images (the toy world)."""

    tensors: Mapping[str, Any]
    tag: str

    def load(self, name: str):
        from PIL import Image

        return Image.fromarray(self.tensors[name].permute(1, 2, 0).contiguous().numpy())

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "tensors", "tag": self.tag}


@dataclass
class ColumnImages:
    """Images held in a `datasets` image column: `rows[name]` indexes `table`."""

    table: Any
    column: str
    rows: Mapping[str, int]
    tag: str

    def load(self, name: str):
        return self.table[self.rows[name]][self.column].convert("RGB")

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "hf", "tag": self.tag}


# --------------------------------------------------------------------------- JSON helpers
def _read_json(path: Path, layout: str) -> Any:
    if not path.is_file():
        raise DataLayoutError(path, "missing", layout)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataLayoutError(path, f"not valid JSON ({exc})", layout) from None


def _field(
    item: Any, key: str, kind: type | tuple[type, ...], path: Path, index: int, layout: str
) -> Any:
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


def _list_of(data: Any, path: Path, layout: str) -> list:
    if not isinstance(data, list):
        raise DataLayoutError(path, f"expected a JSON list, found {type(data).__name__}", layout)
    return data


def _check_split(dataset: str, split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ConfigError(
            f"--split {split!r} is not available for {dataset}; expected one of {', '.join(allowed)}"
        )


# --------------------------------------------------------------------------- FashionIQ
def load_fashioniq(
    root: str | Path, split: str = "val", categories: Iterable[str] | None = None
) -> list[CIRBenchmark]:
    """FashionIQ, one benchmark per category; gallery = that category's split images.

    Only `val` has targets (the test captions do not), so it is the evaluated split.
    """
    _check_split("fashioniq", split, ("val",))
    root = Path(root)
    out = []
    for cat in categories or FASHIONIQ_CATEGORIES:
        if cat not in FASHIONIQ_CATEGORIES:
            raise ConfigError(
                f"FashionIQ category {cat!r}; expected one of {', '.join(FASHIONIQ_CATEGORIES)}"
            )
        cap_path = root / "captions" / f"cap.{cat}.{split}.json"
        split_path = root / "image_splits" / f"split.{cat}.{split}.json"
        gallery = [
            str(a)
            for a in _list_of(
                _read_json(split_path, FASHIONIQ_LAYOUT), split_path, FASHIONIQ_LAYOUT
            )
        ]
        queries = []
        for i, item in enumerate(
            _list_of(_read_json(cap_path, FASHIONIQ_LAYOUT), cap_path, FASHIONIQ_LAYOUT)
        ):
            caps = _field(item, "captions", list, cap_path, i, FASHIONIQ_LAYOUT)
            if len(caps) != 2 or not all(isinstance(c, str) for c in caps):
                raise DataLayoutError(
                    cap_path, f"item {i}: field 'captions' must hold two strings", FASHIONIQ_LAYOUT
                )
            ref = _field(item, "candidate", str, cap_path, i, FASHIONIQ_LAYOUT)
            tgt = _field(item, "target", str, cap_path, i, FASHIONIQ_LAYOUT)
            queries.append(CIRQuery(str(i), ref, tuple(caps), (tgt,)))
        names = dict.fromkeys([*gallery, *(q.reference for q in queries)])
        # SEARLE/LinCIR read .jpg; Pic2Word's CosMo download has .png
        png_only = (
            bool(gallery)
            and not (root / "images" / f"{gallery[0]}.jpg").is_file()
            and (root / "images" / f"{gallery[0]}.png").is_file()
        )
        ext = ".png" if png_only else ".jpg"
        paths = {n: root / "images" / f"{n}{ext}" for n in names}
        images = FileImages(paths, root, FASHIONIQ_LAYOUT)
        out.append(
            CIRBenchmark(
                "fashioniq", split, queries, gallery, images, cat, [str(cap_path), str(split_path)]
            )
        )
    return out


# --------------------------------------------------------------------------- CIRR
def load_cirr(root: str | Path, split: str = "val") -> list[CIRBenchmark]:
    """CIRR val or test1 (`--split test`); gallery = every image of the split."""
    _check_split("cirr", split, ("val", "test"))
    root = Path(root)
    ann_root = root / "cirr" if (root / "cirr" / "captions").is_dir() else root
    file_split = "test1" if split == "test" else split
    cap_path = ann_root / "captions" / f"cap.rc2.{file_split}.json"
    split_path = ann_root / "image_splits" / f"split.rc2.{file_split}.json"
    relpaths = _read_json(split_path, CIRR_LAYOUT)
    if not isinstance(relpaths, dict):
        raise DataLayoutError(
            split_path, "expected a JSON object {name: relative path}", CIRR_LAYOUT
        )
    queries = []
    for i, item in enumerate(_list_of(_read_json(cap_path, CIRR_LAYOUT), cap_path, CIRR_LAYOUT)):
        pairid = _field(item, "pairid", (int, str), cap_path, i, CIRR_LAYOUT)
        ref = _field(item, "reference", str, cap_path, i, CIRR_LAYOUT)
        caption = _field(item, "caption", str, cap_path, i, CIRR_LAYOUT)
        members = _field(
            _field(item, "img_set", dict, cap_path, i, CIRR_LAYOUT),
            "members",
            list,
            cap_path,
            i,
            CIRR_LAYOUT,
        )
        targets = (
            () if split == "test" else (_field(item, "target_hard", str, cap_path, i, CIRR_LAYOUT),)
        )
        queries.append(CIRQuery(str(pairid), ref, (caption,), targets, tuple(members)))
    image_root = root if ann_root != root else root.parent
    paths = {name: image_root / rel for name, rel in relpaths.items()}
    missing = sorted({q.reference for q in queries} - set(paths))
    if missing:
        raise DataLayoutError(
            split_path, f"reference images absent from the split file: {missing[:3]}", CIRR_LAYOUT
        )
    images = FileImages(paths, image_root, CIRR_LAYOUT)
    return [
        CIRBenchmark(
            "cirr", split, queries, list(relpaths), images, None, [str(cap_path), str(split_path)]
        )
    ]


# --------------------------------------------------------------------------- CIRCO
def load_circo(root: str | Path, split: str = "val") -> list[CIRBenchmark]:
    """CIRCO val or test; gallery = the whole COCO 2017 unlabeled set. The `shared_concept`
    field is read by nobody (SEARLE/LinCIR/RTD do not put it in the query)."""
    _check_split("circo", split, ("val", "test"))
    root = Path(root)
    ann_path = root / "annotations" / f"{split}.json"
    info_path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info = _read_json(info_path, CIRCO_LAYOUT)
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise DataLayoutError(info_path, "field 'images' missing or not a list", CIRCO_LAYOUT)
    paths = {}
    for i, img in enumerate(info["images"]):
        image_id = _field(img, "id", int, info_path, i, CIRCO_LAYOUT)
        paths[str(image_id)] = (
            root
            / "COCO2017_unlabeled"
            / "unlabeled2017"
            / _field(img, "file_name", str, info_path, i, CIRCO_LAYOUT)
        )
    queries = []
    for i, item in enumerate(_list_of(_read_json(ann_path, CIRCO_LAYOUT), ann_path, CIRCO_LAYOUT)):
        qid = _field(item, "id", (int, str), ann_path, i, CIRCO_LAYOUT)
        ref = str(_field(item, "reference_img_id", (int, str), ann_path, i, CIRCO_LAYOUT))
        caption = _field(item, "relative_caption", str, ann_path, i, CIRCO_LAYOUT)
        targets: tuple[str, ...] = ()
        if split == "val":
            gts = [str(g) for g in _field(item, "gt_img_ids", list, ann_path, i, CIRCO_LAYOUT)]
            first = str(_field(item, "target_img_id", (int, str), ann_path, i, CIRCO_LAYOUT))
            targets = (first, *[g for g in gts if g != first])
        queries.append(CIRQuery(str(qid), ref, (caption,), targets))
    unknown = sorted({n for q in queries for n in (q.reference, *q.targets)} - set(paths))
    if unknown:
        raise DataLayoutError(
            info_path,
            f"image ids used by {ann_path.name} are not listed: {unknown[:3]}",
            CIRCO_LAYOUT,
        )
    images = FileImages(paths, root, CIRCO_LAYOUT)
    return [
        CIRBenchmark(
            "circo", split, queries, list(paths), images, None, [str(ann_path), str(info_path)]
        )
    ]


# --------------------------------------------------------------------------- GeneCIS
def _genecis_key(item: Any, path: Path, index: int, attribute: bool) -> tuple[str, Path | tuple]:
    if attribute:
        image_id = _field(item, "image_id", (int, str), path, index, GENECIS_LAYOUT)
        box = _field(item, "instance_bbox", list, path, index, GENECIS_LAYOUT)
        if len(box) != 4:
            raise DataLayoutError(
                path, f"item {index}: 'instance_bbox' must be [x, y, w, h]", GENECIS_LAYOUT
            )
        return f"{image_id}@{','.join(f'{float(v):g}' for v in box)}", (
            str(image_id),
            tuple(float(v) for v in box),
        )
    image_id = _field(item, "val_image_id", int, path, index, GENECIS_LAYOUT)
    return str(image_id), Path(f"{image_id:012d}.jpg")


def load_genecis(
    root: str | Path, split: str = "test", tasks: Iterable[str] | None = None
) -> list[CIRBenchmark]:
    """GeneCIS, one benchmark per task; each query ranks its own gallery (target first).

    GeneCIS has a single evaluation set, read for `--split test` (or `val`, as the LinCIR
    branch calls it). Every query's prompt uses its own `condition` string, which LinCIR's
    `eval_genecis` harness loses for the object tasks (brief §3.4).
    """
    _check_split("genecis", split, ("val", "test"))
    root = Path(root)
    out = []
    for task in tasks or GENECIS_TASKS:
        if task not in GENECIS_TASKS:
            raise ConfigError(f"GeneCIS task {task!r}; expected one of {', '.join(GENECIS_TASKS)}")
        attribute = task.endswith("attribute")
        path = root / "genecis" / f"{task}.json"
        files: dict[str, Any] = {}
        queries = []
        for i, item in enumerate(_list_of(_read_json(path, GENECIS_LAYOUT), path, GENECIS_LAYOUT)):
            condition = _field(item, "condition", str, path, i, GENECIS_LAYOUT)
            ref, ref_src = _genecis_key(
                _field(item, "reference", dict, path, i, GENECIS_LAYOUT), path, i, attribute
            )
            tgt, tgt_src = _genecis_key(
                _field(item, "target", dict, path, i, GENECIS_LAYOUT), path, i, attribute
            )
            gallery = [
                _genecis_key(g, path, i, attribute)
                for g in _field(item, "gallery", list, path, i, GENECIS_LAYOUT)
            ]
            files.update({ref: ref_src, tgt: tgt_src, **dict(gallery)})
            queries.append(
                CIRQuery(str(i), ref, (condition,), (tgt,), (), (tgt, *[g for g, _ in gallery]))
            )
        if attribute:
            boxes = {
                k: (root / "VG_100K_all" / f"{img}.jpg", box) for k, (img, box) in files.items()
            }
            images: ImageSource = CroppedImages(boxes, root, GENECIS_LAYOUT)
        else:
            images = FileImages(
                {k: root / "val2017" / p for k, p in files.items()}, root, GENECIS_LAYOUT
            )
        out.append(CIRBenchmark("genecis", split, queries, [], images, task, [str(path)]))
    return out


# --------------------------------------------------------------------------- toy world
def load_toy(
    split: str = "val",
    n_queries: int = 300,
    n_distractors: int | None = None,
    seed: int = 0,
    size: int = 32,
) -> list[CIRBenchmark]:
    """The toy CIR world (`labshared.toy.modification_triplets`) as a benchmark.

    Every gallery image showing the target's (digit, colour, background) counts as a
    ground truth (the exact target first), so metrics read like CIRCO's.
    """
    from labshared import toy

    _check_split("toy", split, ("val", "test"))
    world = toy.modification_triplets(
        split, n_queries, n_distractors=n_distractors, seed=seed, size=size
    )
    gal_names = [f"gal{j:05d}" for j in range(len(world.gallery_images))]
    tensors = {name: img for name, img in zip(gal_names, world.gallery_images, strict=True)}
    queries = []
    for i in range(len(world)):
        ref = f"ref{i:05d}"
        tensors[ref] = world.reference_images[i]
        exact = int(world.target_index[i])
        same = (
            (world.gallery_attrs == world.target_attrs[i]).all(dim=1).nonzero().flatten().tolist()
        )
        targets = (gal_names[exact], *[gal_names[j] for j in same if j != exact])
        queries.append(CIRQuery(str(i), ref, (world.texts[i],), targets))
    tag = f"toy-{split}-n{n_queries}-d{n_distractors}-s{seed}-px{size}"
    return [CIRBenchmark("toy", split, queries, gal_names, TensorImages(tensors, tag), None, [])]


# --------------------------------------------------------------------------- HF mirrors
def _need_columns(table: Any, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataLayoutError(name, f"columns {missing} missing; found {table.column_names}")


def cirr_from_hf(
    queries: Any, images: Any, split: str = "val", tag: str = "royokong/cirr"
) -> CIRBenchmark:
    """CIRR from `royokong/cirr_val` rows (`pairid`, `candidate_id`, `target_id`,
    `caption`, optional `group` members) and `royokong/cirr_imgs` rows (`id`, `img`)."""
    _need_columns(queries, ["candidate_id", "caption"], f"{tag}_{split}")
    _need_columns(images, ["id", "img"], f"{tag}_imgs")
    rows = {str(n): i for i, n in enumerate(images["id"])}
    out = []
    for i, row in enumerate(
        queries.remove_columns([c for c in queries.column_names if c in ("candidate", "target")])
    ):
        targets = (
            (str(row["target_id"]),) if split == "val" and row.get("target_id") is not None else ()
        )
        subset = tuple(row["group"]) if isinstance(row.get("group"), list) else ()
        out.append(
            CIRQuery(
                str(row.get("pairid", i)),
                str(row["candidate_id"]),
                (row["caption"],),
                targets,
                subset,
            )
        )
    return CIRBenchmark(
        "cirr", split, out, list(rows), ColumnImages(images, "img", rows, tag), None, [tag]
    )


def fashioniq_from_hf(
    queries: Any, images: Any, category: str, tag: str = "royokong/fashioniq"
) -> CIRBenchmark:
    """One FashionIQ category from `royokong/fashioniq_val` rows (`category`,
    `candidate_id`, `target_id`, `caption`: [c1, c2]) and `fashioniq_val_imgs` rows
    (`id`, `img`, `category`)."""
    _need_columns(queries, ["category", "candidate_id", "target_id", "caption"], f"{tag}_val")
    _need_columns(images, ["id", "img", "category"], f"{tag}_val_imgs")
    cats = images["category"]
    rows = {
        str(n): i for i, (n, c) in enumerate(zip(images["id"], cats, strict=True)) if c == category
    }
    out = []
    for i, (cat, ref, tgt, caps) in enumerate(
        zip(
            queries["category"],
            queries["candidate_id"],
            queries["target_id"],
            queries["caption"],
            strict=True,
        )
    ):
        if cat == category:
            out.append(CIRQuery(str(i), str(ref), tuple(caps), (str(tgt),)))
    return CIRBenchmark(
        "fashioniq", "val", out, list(rows), ColumnImages(images, "img", rows, tag), category, [tag]
    )


def load_hf(dataset: str, split: str, parts: Iterable[str] | None = None) -> list[CIRBenchmark]:
    """The Hugging Face mirrors (need the hub or its local cache; honours HF_DATASETS_OFFLINE)."""
    import datasets

    if dataset == "cirr":
        _check_split("cirr", split, ("val", "test"))
        queries = datasets.load_dataset(f"royokong/cirr_{split}", split=split)
        images = datasets.load_dataset("royokong/cirr_imgs", split=split)
        return [cirr_from_hf(queries, images, split)]
    if dataset == "fashioniq":
        _check_split("fashioniq", split, ("val",))
        queries = datasets.load_dataset("royokong/fashioniq_val", split="val")
        images = datasets.load_dataset("royokong/fashioniq_val_imgs", split="val")
        return [fashioniq_from_hf(queries, images, c) for c in parts or FASHIONIQ_CATEGORIES]
    raise ConfigError(
        f"--data-root hf: no Hugging Face copy of {dataset} is known (CIRR and FashionIQ only)"
    )


# --------------------------------------------------------------------------- registry
DATASETS: dict[str, Callable[..., list[CIRBenchmark]]] = {
    "fashioniq": load_fashioniq,
    "cirr": load_cirr,
    "circo": load_circo,
    "genecis": load_genecis,
    "toy": load_toy,
}
DEFAULT_SPLIT = {"fashioniq": "val", "cirr": "val", "circo": "val", "genecis": "test", "toy": "val"}


def build_benchmarks(
    dataset: str,
    root: str | Path | None,
    split: str | None = None,
    parts: Iterable[str] | None = None,
    **toy_kwargs: Any,
) -> list[CIRBenchmark]:
    """One way in: `dataset` from `DATASETS`, `root` its folder (`hf` for the hub copies,
    unused for `toy`), `parts` FashionIQ categories or GeneCIS tasks."""
    import difflib

    if dataset not in DATASETS:
        close = difflib.get_close_matches(dataset, DATASETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}{hint}")
    split = split or DEFAULT_SPLIT[dataset]
    if dataset == "toy":
        return load_toy(split, **toy_kwargs)
    if root is None:
        raise ConfigError(
            f"--data-root is required for {dataset} (its folder in the official layout, or 'hf')"
        )
    if str(root) == "hf":
        return load_hf(dataset, split, parts)
    if not Path(root).is_dir():
        raise ConfigError(f"--data-root {root} is not a folder")
    if dataset in ("fashioniq", "genecis"):
        return DATASETS[dataset](root, split, parts)
    if parts:
        raise ConfigError(f"--parts applies to fashioniq and genecis only, not {dataset}")
    return DATASETS[dataset](root, split)
