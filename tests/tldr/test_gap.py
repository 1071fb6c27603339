"""Image-caption pairs for the modality gap: COCO captions layout and JSONL."""

import json

import pytest
import torch
from PIL import Image

from labshared.errors import DataLayoutError
from tldr_cli.gap import load_gap_pairs


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
