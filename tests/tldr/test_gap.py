"""Image-caption pairs for the modality gap: COCO captions layout and JSONL."""

import json
import os

import pytest
import torch
from PIL import Image

from labshared.errors import DataLayoutError
from labshared.toy.sources import toy_fingerprint
from tldr_cli.gap import gap_pairs_fingerprint, load_gap_pairs


def _img(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, 0, 0)).save(path)


def test_coco_layout(tmp_path):
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2)]
    anns = [
        {"image_id": 1, "caption": "a red bus"},
        {"image_id": 2, "caption": "two cats"},
        {"image_id": 1, "caption": "a bus on a street"},
    ]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2014.json").write_text(
        json.dumps({"images": images, "annotations": anns})
    )
    for i, value in ((1, 10), (2, 200)):
        _img(tmp_path / "val2014" / f"COCO_val2014_{i:012d}.jpg", value)
    imgs, caps = load_gap_pairs(str(tmp_path), 10, torch.Generator().manual_seed(0))
    assert sorted(caps) == sorted(a["caption"] for a in anns)
    by_caption = {c: im.getpixel((0, 0))[0] for c, im in zip(caps, imgs, strict=True)}
    assert by_caption["two cats"] == 200 and by_caption["a red bus"] == 10
    imgs, caps = load_gap_pairs(str(tmp_path), 2, torch.Generator().manual_seed(0))
    assert len(caps) == 2 and len(set(caps)) == 2  # without replacement


def test_jsonl_and_errors(tmp_path):
    _img(tmp_path / "im" / "a.png", 5)
    (tmp_path / "pairs.jsonl").write_text('{"image": "im/a.png", "caption": "a thing"}\n\n')
    imgs, caps = load_gap_pairs(str(tmp_path / "pairs.jsonl"), 5, torch.Generator())
    assert caps == ["a thing"] and imgs[0].getpixel((0, 0)) == (5, 0, 0)
    (tmp_path / "bad.jsonl").write_text('{"img": "im/a.png"}\n')
    with pytest.raises(DataLayoutError, match="line 1"):
        load_gap_pairs(str(tmp_path / "bad.jsonl"), 5, torch.Generator())
    with pytest.raises(DataLayoutError, match="captions_val2014.json: caption file not found"):
        load_gap_pairs(str(tmp_path / "im"), 5, torch.Generator())


def _later(path):
    """Move a file's mtime on by a second (a same-size rewrite must still be seen)."""
    mtime = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(mtime, mtime))


def test_gap_pairs_key_sees_every_image_and_the_captions_file(tmp_path):
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2)]
    anns = [{"image_id": 1, "caption": "a red bus"}, {"image_id": 2, "caption": "two cats"}]
    captions = tmp_path / "coco" / "annotations" / "captions_val2014.json"
    captions.parent.mkdir(parents=True)
    captions.write_text(json.dumps({"images": images, "annotations": anns}))
    for i, value in ((1, 10), (2, 200)):
        _img(tmp_path / "coco" / "val2014" / f"COCO_val2014_{i:012d}.jpg", value)
    _img(tmp_path / "im" / "a.png", 5)
    (tmp_path / "pairs.jsonl").write_text('{"image": "im/a.png", "caption": "a thing"}\n')
    for source, files in (
        (
            tmp_path / "coco",
            [tmp_path / "coco" / "val2014" / "COCO_val2014_000000000002.jpg", captions],
        ),
        (tmp_path / "pairs.jsonl", [tmp_path / "im" / "a.png", tmp_path / "pairs.jsonl"]),
    ):
        before = gap_pairs_fingerprint(str(source))
        assert gap_pairs_fingerprint(str(source)) == before
        image, annotation = files
        with Image.open(image) as im:  # an image inverted, annotations untouched: a new key
            Image.eval(im, lambda v: 255 - v).save(image)
        _later(image)
        after = gap_pairs_fingerprint(str(source))
        assert after != before
        _later(annotation)  # the captions file rewritten alone: a new key too
        assert gap_pairs_fingerprint(str(source)) not in (before, after)
    toy = gap_pairs_fingerprint("toy")
    assert toy == {"source": "toy", "toy": toy_fingerprint()}
