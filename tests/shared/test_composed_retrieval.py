"""labshared.data.composed_retrieval on fixture files written in each official layout."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from labshared.data.composed_retrieval import (
    GENECIS_TASKS,
    build_benchmarks,
    cirr_from_hf,
    fashioniq_from_hf,
    load_circo,
    load_cirr,
    load_fashioniq,
    load_genecis,
    load_toy,
)
from labshared.errors import ConfigError, DataLayoutError


def _img(path, size=(8, 8), colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# --------------------------------------------------------------------------- FashionIQ
def _fashioniq(root, ext="jpg"):
    _json(
        root / "captions" / "cap.dress.val.json",
        [{"target": "B2", "candidate": "B1", "captions": ["is red.", "has stripes"]}],
    )
    _json(root / "image_splits" / "split.dress.val.json", ["B1", "B2", "B3"])
    for name in ("B1", "B2", "B3"):
        _img(root / "images" / f"{name}.{ext}")


def test_fashioniq_official_layout(tmp_path):
    _fashioniq(tmp_path)
    (bench,) = load_fashioniq(tmp_path, "val", ["dress"])
    assert bench.name == "fashioniq-dress" and bench.gallery == ["B1", "B2", "B3"]
    (q,) = bench.queries
    assert (q.reference, q.captions, q.targets) == ("B1", ("is red.", "has stripes"), ("B2",))
    assert bench.images.load("B2").size == (8, 8)
    assert bench.image_names() == ["B1", "B2", "B3"]


def test_fingerprint_changes_when_an_image_is_rewritten(tmp_path):
    _fashioniq(tmp_path)
    (bench,) = load_fashioniq(tmp_path, "val", ["dress"])
    before = bench.fingerprint()
    assert load_fashioniq(tmp_path, "val", ["dress"])[0].fingerprint() == before
    _img(tmp_path / "images" / "B3.jpg", size=(9, 9))
    assert load_fashioniq(tmp_path, "val", ["dress"])[0].fingerprint() != before


def test_fashioniq_png_images_and_missing_category(tmp_path):
    _fashioniq(tmp_path, ext="png")
    (bench,) = load_fashioniq(tmp_path, "val", ["dress"])
    assert bench.images.load("B3").mode == "RGB"
    with pytest.raises(DataLayoutError, match=r"split\.shirt\.val\.json: missing"):
        load_fashioniq(tmp_path, "val", ["shirt"])
    with pytest.raises(ConfigError, match="expected one of val"):
        load_fashioniq(tmp_path, "test", ["dress"])
    (tmp_path / "captions").rename(tmp_path / "json")  # Pic2Word's copy of the layout
    (bench,) = load_fashioniq(tmp_path, "val", ["dress"])
    assert bench.queries[0].targets == ("B2",) and bench.annotation_files[0].endswith(
        "json/cap.dress.val.json"
    )


def test_fashioniq_malformed_item_names_file_and_field(tmp_path):
    _fashioniq(tmp_path)
    _json(tmp_path / "captions" / "cap.dress.val.json", [{"target": "B2", "captions": ["a", "b"]}])
    with pytest.raises(
        DataLayoutError, match=r"cap\.dress\.val\.json: item 0: field 'candidate' missing"
    ):
        load_fashioniq(tmp_path, "val", ["dress"])
    _json(
        tmp_path / "captions" / "cap.dress.val.json",
        [{"target": "B2", "candidate": "B1", "captions": ["only one"]}],
    )
    with pytest.raises(DataLayoutError, match="two strings"):
        load_fashioniq(tmp_path, "val", ["dress"])


# --------------------------------------------------------------------------- CIRR
def _cirr(root, split="val", n=8):
    file_split = "test1" if split == "test" else split
    folder = "dev" if split == "val" else "test1"
    names = [f"{folder}-{i}-0-img0" for i in range(n)]
    _json(
        root / "cirr" / "image_splits" / f"split.rc2.{file_split}.json",
        {n_: f"./{folder}/{n_}.png" for n_ in names},
    )
    items = []
    for i in range(4):
        item = {
            "pairid": 100 + i,
            "reference": names[i],
            "caption": f"make it {i}",
            "img_set": {"id": i, "members": names[i : i + 6]},
        }
        if split == "val":
            item.update({"target_hard": names[i + 1], "target_soft": {names[i + 1]: 1.0}})
        items.append(item)
    _json(root / "cirr" / "captions" / f"cap.rc2.{file_split}.json", items)
    for i, name in enumerate(names):
        _img(root / folder / f"{name}.png", colour=(i * 20 % 255, 100, 50))
    return names


def test_cirr_val_and_test_layouts(tmp_path):
    names = _cirr(tmp_path, "val")
    (bench,) = load_cirr(tmp_path, "val")
    q = bench.queries[0]
    assert (q.query_id, q.reference, q.targets, q.subset) == (
        "100",
        names[0],
        (names[1],),
        tuple(names[0:6]),
    )
    assert bench.gallery == names and bench.images.load(names[3]).size == (8, 8)
    _cirr(tmp_path, "test")
    (test,) = load_cirr(tmp_path, "test")
    assert all(q.targets == () for q in test.queries) and test.split == "test"


def test_cirr_malformed_annotations(tmp_path):
    _cirr(tmp_path, "val")
    path = tmp_path / "cirr" / "captions" / "cap.rc2.val.json"
    items = json.loads(path.read_text())
    del items[2]["caption"]
    _json(path, items)
    with pytest.raises(
        DataLayoutError, match=r"cap\.rc2\.val\.json: item 2: field 'caption' missing"
    ):
        load_cirr(tmp_path, "val")
    _json(path, {"not": "a list"})
    with pytest.raises(DataLayoutError, match="expected a JSON list"):
        load_cirr(tmp_path, "val")
    path.write_text("{broken")
    with pytest.raises(DataLayoutError, match="not valid JSON"):
        load_cirr(tmp_path, "val")


# --------------------------------------------------------------------------- CIRCO
def _circo(root, n=6):
    ids = [1000 + i for i in range(n)]
    _json(
        root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
        {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]},
    )
    for i in ids:
        _img(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg")
    _json(
        root / "annotations" / "val.json",
        [
            {
                "id": 0,
                "reference_img_id": 1000,
                "target_img_id": 1003,
                "relative_caption": "has two",
                "shared_concept": "dog",
                "gt_img_ids": [1002, 1003, 1004],
            }
        ],
    )
    _json(
        root / "annotations" / "test.json",
        [
            {
                "id": 5,
                "reference_img_id": 1001,
                "relative_caption": "is blue",
                "shared_concept": "cat",
            }
        ],
    )
    return ids


def test_circo_layout_puts_target_first_and_ignores_shared_concept(tmp_path):
    ids = _circo(tmp_path)
    (bench,) = load_circo(tmp_path, "val")
    (q,) = bench.queries
    assert q.targets == ("1003", "1002", "1004") and q.captions == ("has two",)
    assert bench.gallery == [str(i) for i in ids]
    (test,) = load_circo(tmp_path, "test")
    assert test.queries[0].query_id == "5" and test.queries[0].targets == ()


def test_circo_unknown_image_ids_are_reported(tmp_path):
    _circo(tmp_path)
    _json(
        tmp_path / "annotations" / "val.json",
        [
            {
                "id": 0,
                "reference_img_id": 9,
                "target_img_id": 1003,
                "relative_caption": "x",
                "gt_img_ids": [1003],
            }
        ],
    )
    with pytest.raises(DataLayoutError, match=r"not listed: \['9'\]"):
        load_circo(tmp_path, "val")


# --------------------------------------------------------------------------- GeneCIS
def _genecis(root):
    obj = [
        {
            "reference": {"val_image_id": 1},
            "target": {"val_image_id": 2},
            "condition": "a dog",
            "gallery": [{"val_image_id": 3}, {"val_image_id": 4}],
        }
    ]
    box = lambda i, b: {"image_id": i, "instance_bbox": b}  # noqa: E731
    att = [
        {
            "reference": box(5, [10, 10, 20, 10]),
            "target": box(6, [0, 0, 8, 8]),
            "condition": "colour",
            "gallery": [box(5, [50, 20, 10, 10])],
        }
    ]
    for task in GENECIS_TASKS:
        _json(root / "genecis" / f"{task}.json", att if task.endswith("attribute") else obj)
    for i in (1, 2, 3, 4):
        _img(root / "val2017" / f"{i:012d}.jpg")
    for i in (5, 6):
        _img(root / "VG_100K_all" / f"{i}.jpg", size=(100, 50))


def test_genecis_object_and_attribute_tasks(tmp_path):
    _genecis(tmp_path)
    benches = {b.part: b for b in load_genecis(tmp_path, "test")}
    assert set(benches) == set(GENECIS_TASKS)
    (q,) = benches["change_object"].queries
    assert q.captions == ("a dog",)  # the condition text itself, never a rank
    assert q.gallery == ("2", "3", "4") and q.targets == ("2",)
    (qa,) = benches["focus_attribute"].queries
    assert qa.gallery[0] == qa.targets[0] and len(qa.gallery) == 2
    crop = benches["focus_attribute"].images.load(qa.reference)
    # box (10, 10, 20, 10) dilated by 0.7: (0, 3)-(34, 20) -> 34 x 17, padded to 34 x 34
    assert crop.size == (34, 34)
    assert crop.getpixel((17, 0)) == (0, 0, 0) and crop.getpixel((17, 17)) != (0, 0, 0)


def test_genecis_missing_image_is_a_layout_error(tmp_path):
    _genecis(tmp_path)
    (tmp_path / "val2017" / "000000000003.jpg").unlink()
    (bench,) = load_genecis(tmp_path, "test", ["focus_object"])
    with pytest.raises(DataLayoutError, match="image file missing"):
        bench.images.load("3")


# --------------------------------------------------------------------------- toy and registry
def test_toy_benchmark_targets_share_the_target_attributes():
    from labshared import toy

    (bench,) = load_toy("val", n_queries=8, seed=3)
    world = toy.modification_triplets("val", 8, seed=3)
    assert len(bench.queries) == 8 and len(bench.gallery) == 16
    for i, q in enumerate(bench.queries):
        assert q.targets[0] == f"gal{int(world.target_index[i]):05d}"
        for t in q.targets:
            assert world.gallery_attrs[int(t[3:])].tolist() == world.target_attrs[i].tolist()
        assert q.captions == (world.texts[i],)
    assert bench.images.load("ref00000").size == (32, 32)


def test_hf_cirr_rows_convert():
    datasets = pytest.importorskip("datasets")
    imgs = datasets.Dataset.from_dict(
        {
            "id": ["a", "b", "c"],
            "img": [Image.new("RGB", (4, 4)) for _ in range(3)],
            "category": ["x"] * 3,
            "split": ["val"] * 3,
        }
    )
    imgs = imgs.cast_column("img", datasets.Image())
    rows = datasets.Dataset.from_dict(
        {
            "pairid": [7],
            "candidate_id": ["a"],
            "target_id": ["b"],
            "caption": ["is blue"],
            "group": [["a", "b", "c"]],
        }
    )
    bench = cirr_from_hf(rows, imgs, "val")
    assert bench.queries[0].targets == ("b",) and bench.queries[0].subset == ("a", "b", "c")
    assert bench.images.load("c").size == (4, 4)
    with pytest.raises(DataLayoutError, match=r"columns \['caption'\] missing"):
        cirr_from_hf(rows.remove_columns("caption"), imgs, "val")


def test_hf_fashioniq_rows_split_by_category():
    datasets = pytest.importorskip("datasets")
    imgs = datasets.Dataset.from_dict(
        {
            "id": ["a", "b", "c"],
            "img": [Image.new("RGB", (4, 4)) for _ in range(3)],
            "category": ["dress", "dress", "shirt"],
        }
    )
    imgs = imgs.cast_column("img", datasets.Image())
    rows = datasets.Dataset.from_dict(
        {
            "category": ["dress", "shirt"],
            "candidate_id": ["a", "c"],
            "target_id": ["b", "c"],
            "caption": [["x", "y"], ["z", "w"]],
        }
    )
    bench = fashioniq_from_hf(rows, imgs, "dress")
    assert bench.gallery == ["a", "b"] and [q.captions for q in bench.queries] == [("x", "y")]
    assert bench.name == "fashioniq-dress" and bench.images.load("b").size == (4, 4)


def test_registry_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(ConfigError, match="could not load royokong/cirr_val"):
        build_benchmarks("cirr", "hf", "val")
    with pytest.raises(ConfigError, match="CIRR and FashionIQ only"):
        build_benchmarks("circo", "hf", "val")
    with pytest.raises(ConfigError, match="did you mean 'cirr'"):
        build_benchmarks("cir", "/nowhere")
    with pytest.raises(ConfigError, match="--data-root is required"):
        build_benchmarks("circo", None)


def _touch_later(path):
    """Move `path`'s mtime on by one second (a rewrite the stat fingerprint must see)."""
    mtime = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(mtime, mtime))


@pytest.mark.parametrize(
    "write,load",
    [
        (_fashioniq, lambda r: load_fashioniq(r, "val", ["dress"])),
        (_cirr, lambda r: load_cirr(r, "val")),
        (_circo, lambda r: load_circo(r, "val")),
        (_genecis, lambda r: load_genecis(r, "test", ["change_object", "focus_attribute"])),
    ],
)
def test_inverted_images_and_rewritten_annotations_change_every_key(tmp_path, write, load):
    write(tmp_path)
    before = [b.fingerprint() for b in load(tmp_path)]
    for bench in load(tmp_path):
        images = bench.images
        files = (
            images.paths.values()
            if hasattr(images, "paths")
            else [p for p, _ in images.boxes.values()]
        )
        for path in set(files):  # inverted colours, same names, annotations untouched
            with Image.open(path) as img:
                Image.eval(img.convert("RGB"), lambda v: 255 - v).save(path)
            _touch_later(path)
    after = [b.fingerprint() for b in load(tmp_path)]
    assert all(a != b for a, b in zip(after, before, strict=True))
    for bench in load(tmp_path):  # an annotation file rewritten alone: a new key too
        _touch_later(Path(bench.annotation_files[0]))
    again = [b.fingerprint() for b in load(tmp_path)]
    assert all(a != b for a, b in zip(again, after, strict=True))
