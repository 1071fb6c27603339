"""Pinned checksums of toy-world outputs: the same arguments give the same pixels.

The digests were computed on the single-module `labshared/toy.py` before it became the
`labshared.toy` package (issue 11); a refactor that changes one pixel, one caption, one
sampled attribute or the order of random draws fails here. A deliberate change to the
toy world (new renderer, new palette) updates these digests in the same commit and says so.

They hold at 1 and 2 torch threads on this torch build (checked when they were pinned).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from labshared import toy


def digest(*parts: object) -> str:
    """16 hex digits of SHA-256 over tensors (dtype, shape, bytes) and JSON values."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(str(part.dtype).encode())
            h.update(str(tuple(part.shape)).encode())
            h.update(part.contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(part).encode())
    return h.hexdigest()[:16]


def _make_split_train() -> str:
    s = toy.make_split("train", 64, size=32, seed=3)
    return digest(s.images, s.digit, s.colour, s.background, s.digit_index, s.captions)


def _make_split_test_64px() -> str:
    s = toy.make_split("test", 12, size=64, seed=0)
    return digest(s.images, s.captions)


def _make_split_sklearn() -> str:
    s = toy.make_split("val", 16, config=toy.ToyConfig(size=32, seed=5, digit_source="sklearn"))
    return digest(s.images, s.captions)


def _spurious_train_parity() -> str:
    g = toy.spurious_split("train", 40, corr=0.9, class_fn="parity", seed=1)
    return digest(g.images, g.label, g.spurious, g.group, g.captions)


def _spurious_test_48px() -> str:
    g = toy.spurious_split("test", 20, spurious=("stars", "sand"), size=48, seed=2)
    return digest(g.images, g.label, g.spurious, g.captions)


def _modification_val() -> str:
    m = toy.modification_triplets("val", 12, n_distractors=6, seed=4)
    return digest(
        m.reference_images, m.target_images, m.gallery_images, m.texts, m.gallery_captions
    )


def _render_test() -> str:
    return digest(toy.render("test", [0, 7, 3], [1, 2, 5], [0, 3, 5], seed=9))


def _text_triplets() -> str:
    return digest(toy.text_triplets(40, seed=2))


PINNED = {
    _make_split_train: "f7b0d4b15e82f7b3",
    _make_split_test_64px: "8f5343bb85e735cd",
    _make_split_sklearn: "05224f423828bd83",
    _spurious_train_parity: "ec4aad469de7f94e",
    _spurious_test_48px: "9719aee5a7dac972",
    _modification_val: "64464c87d7d48ab0",
    _render_test: "f5a935c85d0f8318",
    _text_triplets: "08111b4d5c93a341",
}


@pytest.mark.parametrize(
    "compute, expected", PINNED.items(), ids=[f.__name__.lstrip("_") for f in PINNED]
)
def test_toy_outputs_match_their_pinned_checksums(compute, expected):
    assert compute() == expected


def test_the_digest_sees_a_one_pixel_change():
    s = toy.make_split("train", 4, size=32, seed=3)
    before = digest(s.images)
    s.images[2, 1, 5, 7] ^= 1
    assert digest(s.images) != before
