"""The official on-disk layouts of FashionIQ, CIRR, CIRCO and GeneCIS (the ones SEARLE,
LinCIR and RTD read), each loaded into `CIRBenchmark`s."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labshared.data.composed_retrieval.records import (
    CIRBenchmark,
    CIRQuery,
    CroppedImages,
    FileImages,
    ImageSource,
)
from labshared.data.composed_retrieval.records import check_split as _check_split
from labshared.data.composed_retrieval.records import field_of as _field
from labshared.data.composed_retrieval.records import list_of as _list_of
from labshared.data.composed_retrieval.records import read_json as _read_json
from labshared.errors import ConfigError, DataLayoutError

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
GENECIS_TASKS = ("focus_attribute", "change_attribute", "focus_object", "change_object")

FASHIONIQ_LAYOUT = """\
fashionIQ_dataset/
    captions/cap.{dress,shirt,toptee}.{train,val,test}.json
        [{"target", "candidate", "captions": [c1, c2]}]
    image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   [asin, ...]
    images/<asin>.jpg   (or .png, as Pic2Word's download; its captions/ is named json/)"""
CIRR_LAYOUT = """\
CIRR/
    cirr/captions/cap.rc2.{train,val,test1}.json
        [{"pairid", "reference", "target_hard", "caption", "img_set": {"members"}}]
    cirr/image_splits/split.rc2.{train,val,test1}.json   {name: "./dev/<name>.png"}
    train/, dev/, test1/   (NLVR2 images at the relative paths above)"""
CIRCO_LAYOUT = """\
CIRCO/
    annotations/{val,test}.json
        [{"id", "reference_img_id", "relative_caption", "target_img_id", "gt_img_ids"}]
    COCO2017_unlabeled/annotations/image_info_unlabeled2017.json
        {"images": [{"id", "file_name"}]}
    COCO2017_unlabeled/unlabeled2017/<000000xxxxxx>.jpg"""
GENECIS_LAYOUT = """\
genecis/
    genecis/{focus,change}_{attribute,object}.json
        [{"reference", "target", "condition", "gallery": [...]}]
    val2017/<val_image_id:012d>.jpg   (COCO 2017 val, object tasks)
    VG_100K_all/<image_id>.jpg        (Visual Genome 1.2, attribute tasks; "instance_bbox" crops)"""


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
        # SEARLE/LinCIR/RTD keep captions in captions/; Pic2Word's copy names the folder json/
        cap_dir = (
            "json" if not (root / "captions").is_dir() and (root / "json").is_dir() else "captions"
        )
        cap_path = root / cap_dir / f"cap.{cat}.{split}.json"
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
        images = FileImages(paths, root, FASHIONIQ_LAYOUT, (cap_path, split_path))
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
    images = FileImages(paths, image_root, CIRR_LAYOUT, (cap_path, split_path))
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
    images = FileImages(paths, root, CIRCO_LAYOUT, (ann_path, info_path))
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
            images: ImageSource = CroppedImages(boxes, root, GENECIS_LAYOUT, (path,))
        else:
            images = FileImages(
                {k: root / "val2017" / p for k, p in files.items()}, root, GENECIS_LAYOUT, (path,)
            )
        out.append(CIRBenchmark("genecis", split, queries, [], images, task, [str(path)]))
    return out
