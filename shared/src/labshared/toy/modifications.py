"""Composed-retrieval triplets of the toy world: (reference, modification text, target).

Reference and target differ in exactly one attribute, and the text says which and to
what: "make it blue", "put it on grass", "change the digit to three". The image triplets
(`modification_triplets`) are the toy CIR benchmark; the text-only triplets
(`text_triplets`) have the layout of RTD's `LLM_triplets.json`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from labshared.errors import ConfigError
from labshared.toy.rendering import (
    ToyConfig,
    composite,
    random_stream,
    sample_digit_indices,
    sample_layout,
)
from labshared.toy.splits import make_split
from labshared.toy.vocabulary import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOUR_NAMES,
    DIGIT_NAMES,
    captions_for,
    check_split,
    name_index,
)

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "digit": ("change the digit to {}", "make it a {}", "turn it into a {}"),
    "colour": ("make it {}", "change the colour to {}", "paint it {}"),
    "background": ("put it on {}", "change the background to {}", "place it on {}"),
}


def modification_text(attribute: str, value: int | str, template: int = 0) -> str:
    """Templated modification text: ("colour", "blue") -> "make it blue"; template 0..2.

    Raises:
        ConfigError: an unknown attribute or value.
    """
    names = {"digit": DIGIT_NAMES, "colour": COLOUR_NAMES, "background": BACKGROUNDS}
    if attribute not in names:
        raise ConfigError(f"attribute {attribute!r}; expected one of {', '.join(ATTRIBUTES)}")
    word = names[attribute][name_index(value, names[attribute], attribute)]
    return _TEMPLATES[attribute][template % len(_TEMPLATES[attribute])].format(word)


def _sample_modifications(
    rng: np.random.Generator, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Reference attributes (n, 3), target attributes (n, 3) differing in exactly one
    column, that column (n,), and the modification texts."""
    sizes = torch.tensor([len(DIGIT_NAMES), len(COLOUR_NAMES), len(BACKGROUNDS)])
    ref = (torch.from_numpy(rng.random((n, 3))) * sizes).long().clamp(max=sizes - 1)
    which = torch.from_numpy(rng.integers(0, 3, n))
    # new value = old + offset (mod size), offset in 1..size-1, so it always differs
    offset = 1 + (torch.from_numpy(rng.random(n)) * (sizes[which] - 1)).long()
    tgt = ref.clone()
    rows = torch.arange(n)
    tgt[rows, which] = (ref[rows, which] + offset) % sizes[which]
    template = rng.integers(0, 3, n)
    texts = [
        modification_text(ATTRIBUTES[w], v, int(t))
        for w, v, t in zip(which.tolist(), tgt[rows, which].tolist(), template, strict=True)
    ]
    return ref, tgt, which, texts


@dataclass
class ModificationSet:
    """Composed-retrieval triplets (reference image, modification text, target image).

    The target shares the reference's layout (same digit image and background crop) except
    for the one changed attribute; a changed digit uses another image of the new class.
    `gallery_images` holds every target (target i is gallery item i) followed by
    `n_distractors` random images; `target_index[i]` is the gallery index of target i.
    Attribute tensors are (N, 3) long: digit, colour, background. Several gallery items
    may share a target's attributes: use `gallery_attrs` for attribute-level recall.
    """

    reference_images: torch.Tensor
    target_images: torch.Tensor
    texts: list[str]
    changed: list[str]
    reference_attrs: torch.Tensor
    target_attrs: torch.Tensor
    reference_captions: list[str]
    target_captions: list[str]
    gallery_images: torch.Tensor
    gallery_attrs: torch.Tensor
    gallery_captions: list[str]
    target_index: torch.Tensor
    split: str
    config: ToyConfig

    def __len__(self) -> int:
        return len(self.texts)


def modification_triplets(
    split: str,
    n: int,
    *,
    n_distractors: int | None = None,
    size: int = 32,
    seed: int = 0,
    config: ToyConfig | None = None,
) -> ModificationSet:
    """`n` (reference, text, target) triplets changing exactly one attribute.

    The attribute is one of digit / colour / background, e.g. "make it blue", "put it on
    grass", "change the digit to three". `n_distractors` (default n) extra random images
    join the targets in the gallery.
    """
    check_split(split)
    cfg = config or ToyConfig(size=size, seed=seed)
    n_distractors = n if n_distractors is None else n_distractors
    rng = random_stream(cfg.seed, split, "modification")
    ref, tgt, which, texts = _sample_modifications(rng, n)
    ref_idx = sample_digit_indices(rng, ref[:, 0], split, cfg)
    new_idx = sample_digit_indices(rng, tgt[:, 0], split, cfg)
    layout = sample_layout(rng, ref_idx, ref[:, 2], cfg, split)
    ref_images = composite(layout, ref[:, 1], ref[:, 2], cfg)
    # target layout: same crop and shift; new digit image only when the digit changed,
    # a fresh crop only when the background changed (the old crop is of another photo)
    new_bg_layout = sample_layout(rng, ref_idx, tgt[:, 2], cfg, split)
    bg_changed = which == 2
    tgt_layout = dataclasses.replace(
        layout,
        digit_index=torch.where(which == 0, new_idx, ref_idx),
        crop_y=torch.where(bg_changed, new_bg_layout.crop_y, layout.crop_y),
        crop_x=torch.where(bg_changed, new_bg_layout.crop_x, layout.crop_x),
    )
    tgt_images = composite(tgt_layout, tgt[:, 1], tgt[:, 2], cfg)
    distract = make_split(
        split, n_distractors, config=dataclasses.replace(cfg, seed=cfg.seed + 7919)
    )
    gallery_attrs = torch.cat([tgt, distract.attributes])
    return ModificationSet(
        reference_images=ref_images,
        target_images=tgt_images,
        texts=texts,
        changed=[ATTRIBUTES[w] for w in which.tolist()],
        reference_attrs=ref,
        target_attrs=tgt,
        reference_captions=captions_for(ref[:, 0], ref[:, 1], ref[:, 2]),
        target_captions=captions_for(tgt[:, 0], tgt[:, 1], tgt[:, 2]),
        gallery_images=torch.cat([tgt_images, distract.images]),
        gallery_attrs=gallery_attrs,
        gallery_captions=captions_for(
            gallery_attrs[:, 0], gallery_attrs[:, 1], gallery_attrs[:, 2]
        ),
        target_index=torch.arange(n),
        split=split,
        config=cfg,
    )


def text_triplets(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` text-only triplets from the caption grammar.

    In the layout of RTD's `LLM_triplets.json`: dicts with `reference_caption`,
    `conditioning_caption` (the modification text) and `target_caption`, which differ in
    exactly one attribute.

    Raises:
        ConfigError: a negative `n`.
    """
    if n < 0:
        raise ConfigError(f"n={n}; expected a non-negative number of triplets")
    rng = random_stream(seed, "text", "text_triplets")
    ref, tgt, _, texts = _sample_modifications(rng, n)
    refs = captions_for(ref[:, 0], ref[:, 1], ref[:, 2])
    tgts = captions_for(tgt[:, 0], tgt[:, 1], tgt[:, 2])
    return [
        {"reference_caption": r, "conditioning_caption": c, "target_caption": t}
        for r, c, t in zip(refs, texts, tgts, strict=True)
    ]
