"""What the tiny CLIP is fitted on: the captions of a toy image and what each one states.

Every (digit, colour, background) triple has one full caption (`toy.caption`) and the
partial captions of `PARTIAL_TEMPLATES` ("a seven", "a red digit", "on grass", "a small
digit", ...), so single words embed sensibly. A partial caption is true of every image
that shares the attributes it names (`caption_matches`): the positives of the fit's
multi-positive loss. The templates enter the fit's cache key.
"""

from __future__ import annotations

import torch

from labshared import toy

#: Partial-caption templates; fields {d} digit, {c} colour, {b} background, {s} small/large,
#: {p} even/odd.
PARTIAL_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {d} on {b}.",
    "a {c} {d}",
    "a {d} on {b}",
    "a {c} digit on {b}",
    "a {c} digit",
    "a {d}",
    "a photo of a {d}.",
    "a photo of a {c} {d}.",
    "on {b}",
    "a photo of {b}.",
    "a digit on {b}",
    "a photo of a digit on {b}.",
    "a photo of a {c} digit on {b}.",
    "{c}",
    "{d}",
    "{b}",
    "a {s} digit",  # s: small (0-4) / large (5-9), toy.CLASS_FNS["digit<5"] label names
    "a photo of a {s} digit.",
    "an {p} digit",  # p: even / odd, toy.CLASS_FNS["parity"] label names
)

#: What each caption variant states about its image, as flags over `CAPTION_FIELDS`
#: (variant 0 is the full caption; the others follow `PARTIAL_TEMPLATES`).
CAPTION_FIELDS: tuple[str, ...] = ("digit", "colour", "background", "size", "parity")
_FIELD_PLACEHOLDERS = ("{d}", "{c}", "{b}", "{s}", "{p}")


def caption_variants(digit: int, colour: int, background: int) -> list[str]:
    """Full caption first, then every partial caption of one attribute triple."""
    d, c, b = toy.DIGIT_NAMES[digit], toy.COLOUR_NAMES[colour], toy.BACKGROUNDS[background]
    size = "small" if digit < 5 else "large"
    parity = "even" if digit % 2 == 0 else "odd"
    return [toy.caption(digit, colour, background)] + [
        t.format(d=d, c=c, b=b, s=size, p=parity) for t in PARTIAL_TEMPLATES
    ]


def variant_fields() -> torch.Tensor:
    """(V, 5) bool: which of `CAPTION_FIELDS` each caption variant names."""
    full = [True, True, True, False, False]
    rows = [full] + [[ph in t for ph in _FIELD_PLACEHOLDERS] for t in PARTIAL_TEMPLATES]
    return torch.tensor(rows)


def caption_matches(attrs: torch.Tensor, variant: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: caption i (of image i, variant `variant[i]`) is true of image j.

    "a small digit" written for image i is just as true of every other small digit in the
    batch, and a full caption of every image with the same three attributes.

    Args:
        attrs: (B, 3) long digit, colour, background of each image.
        variant: (B,) long caption variant drawn for each image.
    """
    digit = attrs[:, 0]
    keys = torch.stack([digit, attrs[:, 1], attrs[:, 2], (digit >= 5).long(), digit % 2], 1)
    equal = keys[:, None, :] == keys[None, :, :]  # (B, B, 5)
    named = variant_fields()[variant]  # (B, 5) the fields caption i states
    return (equal | ~named[:, None, :]).all(-1)


class CaptionBank:
    """Every caption variant of every attribute triple, tokenised once."""

    def __init__(self, tokenizer) -> None:
        nd, nc, nb = len(toy.DIGIT_NAMES), len(toy.COLOUR_NAMES), len(toy.BACKGROUNDS)
        texts = [caption_variants(d, c, b) for d in range(nd) for c in range(nc) for b in range(nb)]
        self.n_variants = len(texts[0])
        self.shape = (nd, nc, nb)
        self.tokens = tokenizer([t for variants in texts for t in variants])  # (T*V, ctx)

    def sample(
        self, attrs: torch.Tensor, gen: torch.Generator, full_prob: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, variant) for each (digit, colour, background) row: the full caption
        (variant 0) with probability `full_prob`, else a uniformly chosen partial caption."""
        nd, nc, nb = self.shape
        triple = (attrs[:, 0] * nc + attrs[:, 1]) * nb + attrs[:, 2]
        partial = torch.randint(1, self.n_variants, (len(attrs),), generator=gen)
        full = torch.rand(len(attrs), generator=gen) < full_prob
        variant = torch.where(full, torch.zeros_like(partial), partial)
        return self.tokens[triple * self.n_variants + variant], variant
