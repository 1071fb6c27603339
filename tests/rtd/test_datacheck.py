"""`rtd check-data` on fixture files written in each benchmark's official layout (as
tests/shared/test_composed_retrieval.py writes them): counts, the first missing image named,
malformed annotations as the loaders' one-line error, no model loaded."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from labshared.data.composed_retrieval import GENECIS_TASKS
from rtd_cli.cli import app
from rtd_cli.datacheck import check_layout

runner = CliRunner()


def _img(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _fashioniq(root):
    for cat in ("dress", "shirt", "toptee"):
        _json(root / "captions" / f"cap.{cat}.val.json",
              [{"target": f"{cat}2", "candidate": f"{cat}1", "captions": ["a", "b"]},
               {"target": f"{cat}3", "candidate": f"{cat}9", "captions": ["c", "d"]}])  # fmt: skip
        _json(root / "image_splits" / f"split.{cat}.val.json", [f"{cat}{i}" for i in (1, 2, 3)])
        for i in (1, 2, 3, 9):  # the reference {cat}9 is not in the gallery: read all the same
            _img(root / "images" / f"{cat}{i}.jpg")


def _cirr(root):
    names = [f"dev-{i}-0-img0" for i in range(7)]
    _json(root / "cirr" / "image_splits" / "split.rc2.val.json",
          {n: f"./dev/{n}.png" for n in names})  # fmt: skip
    _json(root / "cirr" / "captions" / "cap.rc2.val.json",
          [{"pairid": i, "reference": names[i], "caption": "x", "target_hard": names[i + 1],
            "img_set": {"id": i, "members": names[i : i + 6]}} for i in range(2)])  # fmt: skip
    for n in names:
        _img(root / "dev" / f"{n}.png")
    return names


def _circo(root, aspects=True):
    ids = [1000 + i for i in range(6)]
    _json(root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
          {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]})  # fmt: skip
    for i in ids:
        _img(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg")
    item = {"id": 0, "reference_img_id": 1000, "target_img_id": 1003, "relative_caption": "x",
            "shared_concept": "dog", "gt_img_ids": [1003, 1002]}  # fmt: skip
    if aspects:
        item["semantic_aspects"] = ["cardinality"]
    _json(root / "annotations" / "val.json", [item, {**item, "id": 1, "semantic_aspects": []}])
    return ids


def _genecis(root):
    obj = [{"reference": {"val_image_id": 1}, "target": {"val_image_id": 2}, "condition": "a dog",
            "gallery": [{"val_image_id": 3}, {"val_image_id": 4}]}]  # fmt: skip

    def box(i, b):
        return {"image_id": i, "instance_bbox": b}

    att = [{"reference": box(5, [1, 1, 4, 4]), "target": box(6, [0, 0, 8, 8]),
            "condition": "colour", "gallery": [box(5, [2, 2, 3, 3])]}]  # fmt: skip
    for task in GENECIS_TASKS:
        _json(root / "genecis" / f"{task}.json", att if task.endswith("attribute") else obj)
    for i in (1, 2, 3, 4):
        _img(root / "val2017" / f"{i:012d}.jpg")
    for i in (5, 6):
        _img(root / "VG_100K_all" / f"{i}.jpg", size=(20, 20))


def test_complete_layouts_pass_with_exact_counts(tmp_path):
    _fashioniq(tmp_path / "fiq")
    reports = check_layout("fashioniq", tmp_path / "fiq")
    assert [(r.name, r.queries, r.gallery, r.images, r.on_disk, r.n_missing) for r in reports] == [
        (f"fashioniq-{c}", 2, 3, 4, 4, 0) for c in ("dress", "shirt", "toptee")
    ]
    _cirr(tmp_path / "cirr")
    (r,) = check_layout("cirr", tmp_path / "cirr", "val")
    assert (r.queries, r.gallery, r.images, r.on_disk) == (2, 7, 7, 7)
    _circo(tmp_path / "circo")
    (r,) = check_layout("circo", tmp_path / "circo", "val")
    assert (r.queries, r.gallery, r.images, r.on_disk, r.semantic_aspects) == (2, 6, 6, 6, 1)
    _genecis(tmp_path / "genecis")
    reports = {r.name: r for r in check_layout("genecis", tmp_path / "genecis")}
    # object tasks: 4 COCO files; attribute tasks: 3 crops of 2 Visual Genome files
    assert reports["genecis-focus_object"].images == 4
    assert reports["genecis-change_attribute"].images == 2
    assert all(r.n_missing == 0 and r.gallery == 0 for r in reports.values())


def test_cli_names_the_first_missing_file_and_counts_the_rest(tmp_path):
    root = tmp_path / "CIRCO"
    ids = _circo(root)
    for i in ids[2:5]:
        (root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg").unlink()
    res = runner.invoke(app, ["check-data", "--dataset", "circo", "--data-root", str(root)])
    assert res.exit_code == 1
    first = root / "COCO2017_unlabeled" / "unlabeled2017" / f"{ids[2]:012d}.jpg"
    error = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert error == [
        f"error: {first}: image file missing (the first of 3 missing: 3 of 6 in circo val)"
    ]
    assert "expected layout:" in res.output and "unlabeled2017" in res.output
    assert f"missing: {first}" in res.stdout
    assert "1 of 2 queries carry semantic_aspects" in res.stdout


def test_cli_ok_and_json(tmp_path):
    _fashioniq(tmp_path)
    res = runner.invoke(app, ["check-data", "--dataset", "fashioniq", "--data-root",
                              str(tmp_path), "--parts", "dress,toptee", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [p["name"] for p in out["parts"]] == ["fashioniq-dress", "fashioniq-toptee"]
    assert all(p["on_disk"] == 4 and p["n_missing"] == 0 for p in out["parts"])
    assert out["parts"][0]["annotation_files"][0].endswith("cap.dress.val.json")


def test_missing_folder_and_unlisted_image(tmp_path):
    _genecis(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "VG_100K_all")
    reports = {r.name: r for r in check_layout("genecis", tmp_path, parts=("focus_attribute",))}
    r = reports["genecis-focus_attribute"]
    assert (r.images, r.on_disk, r.n_missing) == (2, 0, 2)
    assert r.missing[0].endswith("VG_100K_all/5.jpg")
    names = _cirr(tmp_path / "cirr")
    caps = tmp_path / "cirr" / "cirr" / "captions" / "cap.rc2.val.json"
    items = json.loads(caps.read_text())
    items[0]["img_set"]["members"][1] = "dev-99-0-img0"  # a member the split file lacks
    caps.write_text(json.dumps(items))
    (r,) = check_layout("cirr", tmp_path / "cirr")
    assert r.n_missing == 1 and "not listed in the image index" in r.missing[0]
    assert names[0] not in r.missing[0]


@pytest.mark.parametrize("dataset", ["fashioniq", "cirr", "circo", "genecis"])
def test_missing_annotations_are_the_loaders_one_line_error(dataset, tmp_path):
    res = runner.invoke(app, ["check-data", "--dataset", dataset, "--data-root", str(tmp_path)])
    assert res.exit_code == 1
    error = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(tmp_path) in error[0] and "missing" in error[0]
    assert "Traceback" not in res.output


def test_malformed_semantic_aspects_name_file_and_field(tmp_path):
    _circo(tmp_path)
    ann = tmp_path / "annotations" / "val.json"
    items = json.loads(ann.read_text())
    items[1]["semantic_aspects"] = "viewpoint"
    ann.write_text(json.dumps(items))
    res = runner.invoke(app, ["check-data", "--dataset", "circo", "--data-root", str(tmp_path)])
    assert res.exit_code == 1
    assert "val.json: item 1: field 'semantic_aspects' must be a list of strings" in res.output
