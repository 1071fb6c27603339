"""Image-caption pairs for the CLIP modality gap (`TLDR:datasets/coco_dataset.py`,
`get_modality_gap` in `TLDR:last_layer_retrain/tldr.py:L207-242`).

The official code draws 2000 random COCO-2014 val caption annotations, splits them
1000/1000 and uses the first half, i.e. 1000 random (image, caption) pairs; here
`n` pairs are drawn at random (without replacement) from the source with a seeded
generator. Sources:

- `toy`: toy-world images with their captions (`labshared.toy.make_split`, all colours and
  backgrounds, the analogue of COCO for the tiny CLIP);
- a COCO-captions folder: `captions_val2014.json` (in `annotations/`, the root, or the
  fiftyone layout's `raw/`) and the images (`val2014/`, fiftyone's `validation/data/`,
  or `images/`);
- a JSONL file of {"image": path (relative to the file's folder), "caption": text}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from labshared import toy
from labshared.cache import fingerprint_files
from labshared.errors import DataLayoutError
from labshared.toy.sources import toy_fingerprint

COCO_LAYOUT = """\
<root>/
  annotations/captions_val2014.json   (or <root>/captions_val2014.json, <root>/raw/...)
      {"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}, ...],
       "annotations": [{"image_id": 42, "caption": "A man ..."}, ...]}
  val2014/COCO_val2014_000000000042.jpg  (or validation/data/, images/)
or a JSONL file with one {"image": "<path>", "caption": "<text>"} per line"""

_COCO_JSON = (
    "annotations/captions_val2014.json",
    "captions_val2014.json",
    "raw/captions_val2014.json",
)
_COCO_IMAGES = ("val2014", "validation/data", "images", ".")


def _coco_captions_file(root: Path) -> Path:
    ann_path = next((root / p for p in _COCO_JSON if (root / p).is_file()), None)
    if ann_path is None:
        raise DataLayoutError(root / _COCO_JSON[0], "caption file not found", COCO_LAYOUT)
    return ann_path


def _coco_pairs(root: Path) -> list[tuple[Path, str]]:
    ann_path = _coco_captions_file(root)
    try:
        data = json.loads(ann_path.read_text())
        files = {int(im["id"]): im["file_name"] for im in data["images"]}
        anns = [(int(a["image_id"]), str(a["caption"]).strip()) for a in data["annotations"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataLayoutError(
            ann_path, f"malformed COCO captions file ({exc!r})", COCO_LAYOUT
        ) from None
    first = files[anns[0][0]] if anns and anns[0][0] in files else None
    img_dir = next((root / d for d in _COCO_IMAGES if first and (root / d / first).is_file()), None)
    if img_dir is None:
        raise DataLayoutError(root, f"image folder with {first!r} not found", COCO_LAYOUT)
    out = []
    for image_id, cap in anns:
        if image_id not in files:
            raise DataLayoutError(
                ann_path, f"annotation for unknown image_id {image_id}", COCO_LAYOUT
            )
        out.append((img_dir / files[image_id], cap))
    return out


def _jsonl_pairs(path: Path) -> list[tuple[Path, str]]:
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out.append((path.parent / obj["image"], str(obj["caption"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataLayoutError(
                path, f"line {i}: expected {{'image', 'caption'}} ({exc!r})", COCO_LAYOUT
            ) from None
    if not out:
        raise DataLayoutError(path, "no pairs", COCO_LAYOUT)
    return out


def list_gap_pairs(source: str) -> list[tuple[Path, str]]:
    """Every (image path, caption) of a COCO folder or JSONL file (images not opened).

    Raises:
        DataLayoutError: the source is missing or malformed (naming the file and field).
    """
    path = Path(source)
    if path.is_dir():
        return _coco_pairs(path)
    if path.is_file():
        return _jsonl_pairs(path)
    raise DataLayoutError(
        path, "gap pairs not found (expected 'toy', a COCO folder or a JSONL file)", COCO_LAYOUT
    )


def load_gap_pairs(
    source: str, n: int, generator: torch.Generator
) -> tuple[list[Image.Image], list[str]]:
    """`n` random (image, caption) pairs (fewer if the source has fewer)."""
    if source == "toy":
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        data = toy.make_split("train", n, seed=seed)
        return [toy.to_pil(im) for im in data.images], list(data.captions)
    pairs = list_gap_pairs(source)
    pick = torch.randperm(len(pairs), generator=generator)[:n].tolist()
    images, captions = [], []
    for i in pick:
        img_path, cap = pairs[i]
        try:
            with Image.open(img_path) as im:
                images.append(im.convert("RGB"))
        except OSError:
            raise DataLayoutError(
                img_path, "cannot read the image of a gap pair", COCO_LAYOUT
            ) from None
        captions.append(cap)
    return images, captions


def gap_pairs_fingerprint(source: str) -> dict[str, Any]:
    """What determines the gap pairs, for the gap's cache key: the toy world's
    fingerprint, or `fingerprint_files` (path, size, mtime) of the captions file (COCO
    JSON or JSONL) and every image it lists.

    Raises:
        DataLayoutError: the source is missing or malformed.
    """
    if source == "toy":
        return {"source": "toy", "toy": toy_fingerprint()}
    path = Path(source)
    pairs = list_gap_pairs(source)
    root, captions = (path, _coco_captions_file(path)) if path.is_dir() else (path.parent, path)
    files = [captions, *(image for image, _ in pairs)]
    return {"source": str(path.resolve()), "files": fingerprint_files(root, files)}
